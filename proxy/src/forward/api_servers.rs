//! The registered clusters whose workspaces are reached through their API server
//! (`network: APIServerProxy`): one HTTPS client per cluster, made from the kubeconfig the
//! operator hands over in GuildNet's credentials Secret (`--cluster-credentials-secret`, one
//! key per cluster), kept current from a watch of that one Secret. The proxy never reads
//! the Secrets clusters are registered with, and a rotated kubeconfig arrives with the
//! watch.
//!
//! Through the API server a request goes to the service proxy of the workspace's Service
//! there ([`service_proxy_path`]). The API server passes the answer back with two changes
//! of its own, which [`undo_api_server_rewrites`] takes out again so the browser sees what
//! the workspace sent: a `Location` pointing into the workspace gets the service proxy's
//! path in front, and so do the same-host absolute links of an HTML page (which it decodes
//! to do so when gzip- or deflate-encoded). Requests therefore offer only `gzip`, which
//! [`undo_api_server_rewrites`] can read, or no encoding.
//!
//! [`service_proxy_path`]: guildnet_api::cluster::facts::service_proxy_path

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use bytes::Bytes;
use futures::Stream;
use guildnet_runtime::kubeconfig;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::client::ConfigExt;
use kube::runtime::watcher::{self, Event};
use sha2::{Digest, Sha256};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::handed;

/// A registered cluster's API server, as the proxy sends workspace requests to it.
pub struct ApiServer {
    /// SHA-256 of the kubeconfig it was made from.
    kubeconfig_hash: [u8; 32],
    /// Its base URL and credentials, over a connection pool of its own.
    service: BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>,
}

impl ApiServer {
    /// A client of the cluster `text` (a kubeconfig) names, vetted like the operator's.
    async fn connect(text: &str) -> Result<Self, String> {
        let vetted = kubeconfig::vet(text).map_err(|e| e.to_string())?;
        if vetted.uses_proxy_url() {
            return Err(
                "the kubeconfig's cluster sets proxy-url, which the proxy does not \
                        dial through; remove it or use network: Direct"
                    .into(),
            );
        }
        let config = vetted.client_config().await.map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = config
            .rustls_https_connector_with_connector(http)
            .map_err(|e| e.to_string())?;
        // The TLS handshake too: an API server that accepts and then hangs (stopped, or
        // overloaded) fails a new connection in seconds, not at --upstream-timeout.
        let mut connector = hyper_timeout::TimeoutConnector::new(https);
        connector.set_connect_timeout(config.connect_timeout);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build::<_, Body>(connector);
        let auth = config.auth_layer().map_err(|e| e.to_string())?;
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(auth)
            .service(client.map_err(BoxError::from))
            .map_err(BoxError::from);
        Ok(Self {
            kubeconfig_hash: Sha256::digest(text.as_bytes()).into(),
            service: BoxCloneSyncService::new(service),
        })
    }

    /// Sends `request` (its URI a path on the API server) with the registration's
    /// credentials, its headers made fit for the API server (`for_api_server`).
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        for_api_server(request.headers_mut());
        self.service.clone().oneshot(request).await
    }
}

/// A workspace request's headers as they may reach a registered cluster's API server:
/// never an `Authorization` of the caller's (the API server would judge it instead of the
/// registration's credentials) nor `Impersonate-*` (which would make those credentials act
/// as someone else), and only the encodings the API server's rewrites can be undone in.
fn for_api_server(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    let impersonation: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
    let gzip = accepts_gzip(headers);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(if gzip { "gzip" } else { "identity" }),
    );
}

/// Whether a request's `Accept-Encoding` takes gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// The answer of a workspace behind a cluster's service proxy at `proxy_path`, as the
/// workspace sent it: the path taken out of `Location`, and out of the links of an HTML
/// page, which is read whole (the API server has read it whole too) and passed on
/// decoded. Anything else streams through untouched.
pub async fn undo_api_server_rewrites(
    mut response: Response<Body>,
    proxy_path: &str,
) -> Result<Response<Body>, BoxError> {
    let headers = response.headers_mut();
    if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok())
        && let Some(undone) = without_proxy_path(location, proxy_path)
        && let Ok(value) = HeaderValue::from_str(&undone)
    {
        headers.insert(header::LOCATION, value);
    }
    if !is_html(headers) {
        return Ok(response);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if !matches!(encoding.as_deref(), None | Some("gzip" | "identity")) {
        // Not one the API server rewrites in: nothing to undo.
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let raw = body.collect().await?.to_bytes();
    let page = if encoding.as_deref() == Some("gzip") {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut decoded)?;
        decoded
    } else {
        raw.to_vec()
    };
    let undone = replace_all(&page, format!("{proxy_path}/").as_bytes(), b"/");
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, undone.len().into());
    Ok(Response::from_parts(parts, Body::from(Bytes::from(undone))))
}

/// `location` with the service proxy's path taken from the front of its path, when it
/// has it (the API server makes such Locations path-only).
fn without_proxy_path(location: &str, proxy_path: &str) -> Option<String> {
    let rest = location.strip_prefix(proxy_path)?;
    match rest.chars().next() {
        None => Some("/".to_owned()),
        Some('/') => Some(rest.to_owned()),
        Some('?' | '#') => Some(format!("/{rest}")),
        Some(_) => None,
    }
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"))
}

/// `haystack` with every `from` replaced by `to`.
fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The API servers of the clusters reached through them, by registration name; clones
/// share them.
#[derive(Clone, Default)]
pub struct ApiServers {
    clusters: Arc<RwLock<HashMap<String, Arc<ApiServer>>>>,
}

impl ApiServers {
    /// The API server to send `cluster`'s workspace requests through, when its
    /// registration says `network: APIServerProxy`.
    pub fn get(&self, cluster: &str) -> Option<Arc<ApiServer>> {
        self.clusters.read().unwrap().get(cluster).cloned()
    }

    /// Keeps the clients current from a watch of the Secret `name` in `namespace`, until
    /// the stream ends.
    pub async fn run(self, client: kube::Client, namespace: String, name: String) {
        self.follow(handed::watch(client, &namespace, &name)).await;
    }

    /// Applies watch `events` of the credentials Secret until they end.
    pub async fn follow(self, events: impl Stream<Item = watcher::Result<Event<Secret>>>) {
        let this = &self;
        handed::follow(events, "the cluster credentials Secret", |data| {
            this.replace(data)
        })
        .await;
    }

    /// Makes the clients those of `kubeconfigs` (cluster → kubeconfig), keeping each one
    /// whose kubeconfig is unchanged.
    async fn replace(&self, kubeconfigs: BTreeMap<String, ByteString>) {
        let mut next = HashMap::new();
        for (cluster, text) in kubeconfigs {
            let hash: [u8; 32] = Sha256::digest(&text.0).into();
            if let Some(kept) = self.get(&cluster).filter(|s| s.kubeconfig_hash == hash) {
                next.insert(cluster, kept);
                continue;
            }
            let Ok(text) = String::from_utf8(text.0) else {
                tracing::warn!(cluster, "the handed-over kubeconfig is not UTF-8 text");
                continue;
            };
            match ApiServer::connect(&text).await {
                Ok(server) => {
                    tracing::info!(
                        cluster,
                        "workspaces of the cluster are reached through its API server"
                    );
                    next.insert(cluster, Arc::new(server));
                }
                Err(error) => {
                    tracing::warn!(cluster, %error, "cannot reach the cluster through its API server");
                }
            }
        }
        let mut clusters = self.clusters.write().unwrap();
        for gone in clusters.keys().filter(|c| !next.contains_key(*c)) {
            tracing::info!(cluster = %gone, "the cluster's workspaces are no longer reached through its API server");
        }
        *clusters = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY_PATH: &str =
        "/api/v1/namespaces/guildnet-workspaces/services/ide-0a1b2c3d:http/proxy";

    fn response(headers: &[(&str, &str)], body: impl Into<Body>) -> Response<Body> {
        let mut response = Response::new(body.into());
        for (name, value) in headers {
            response.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    async fn body_of(response: Response<Body>) -> String {
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_api_servers_location_rewrite_is_undone() {
        for (sent, seen) in [
            (
                format!("{PROXY_PATH}/login?next=%2F"),
                "/login?next=%2F".to_owned(),
            ),
            (PROXY_PATH.to_owned(), "/".to_owned()),
            (format!("{PROXY_PATH}?a=1"), "/?a=1".to_owned()),
            // Not under the service proxy: the workspace's own, untouched.
            (
                "https://elsewhere.example/x".to_owned(),
                "https://elsewhere.example/x".to_owned(),
            ),
            (format!("{PROXY_PATH}x/y"), format!("{PROXY_PATH}x/y")),
        ] {
            let undone = undo_api_server_rewrites(response(&[("location", &sent)], ""), PROXY_PATH)
                .await
                .unwrap();
            assert_eq!(undone.headers()["location"], seen.as_str(), "{sent}");
        }
    }

    #[tokio::test]
    async fn links_of_html_pages_lose_the_service_proxy_path_also_when_gzipped() {
        let page = format!(
            r#"<a href="{PROXY_PATH}/w/team/lab/tree">tree</a><script src="{PROXY_PATH}/static/app.js"></script><a href="rel/x">x</a>"#
        );
        let want = r#"<a href="/w/team/lab/tree">tree</a><script src="/static/app.js"></script><a href="rel/x">x</a>"#;
        let plain = undo_api_server_rewrites(
            response(
                &[("content-type", "text/html; charset=utf-8")],
                page.clone(),
            ),
            PROXY_PATH,
        )
        .await
        .unwrap();
        assert_eq!(
            plain.headers()["content-length"],
            want.len().to_string().as_str()
        );
        assert_eq!(body_of(plain).await, want);

        let mut gzipped = Vec::new();
        {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(&mut gzipped, flate2::Compression::fast());
            encoder.write_all(page.as_bytes()).unwrap();
            encoder.finish().unwrap();
        }
        let decoded = undo_api_server_rewrites(
            response(
                &[("content-type", "text/html"), ("content-encoding", "gzip")],
                gzipped,
            ),
            PROXY_PATH,
        )
        .await
        .unwrap();
        assert!(decoded.headers().get("content-encoding").is_none());
        assert_eq!(body_of(decoded).await, want);

        // Not HTML: the API server leaves it alone, and so does the proxy.
        let script = undo_api_server_rewrites(
            response(&[("content-type", "text/javascript")], page.clone()),
            PROXY_PATH,
        )
        .await
        .unwrap();
        assert_eq!(body_of(script).await, page);
    }

    #[test]
    fn only_gzip_is_offered_and_only_when_the_client_takes_it() {
        let offered = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(offered("gzip, deflate, br, zstd"));
        assert!(offered("br;q=1.0, GZIP;q=0.5"));
        assert!(!offered("br, zstd"));
        assert!(!offered("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_callers_credentials_and_impersonation_never_reach_the_api_server() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Basic YWxpY2U6cHc="),
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-extra-scopes", "all"),
            ("accept-encoding", "br, gzip"),
            ("cookie", "app=1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        for_api_server(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-encoding", "cookie"]);
        assert_eq!(headers["accept-encoding"], "gzip");
    }

    #[test]
    fn every_occurrence_is_replaced() {
        assert_eq!(replace_all(b"a/p/b/p/", b"/p/", b"/"), b"a/b/");
        assert_eq!(replace_all(b"none", b"/p/", b"/"), b"none");
    }
}
