//! The dashboard's JSON API and the login page.
//!
//! Reads come from the proxy's caches, filtered to what the caller may see. Writes (launch,
//! suspend, resume, delete) go to the API server impersonating the caller, so RBAC and the
//! admission webhook decide exactly as they would for `kubectl`. Browser writes, logging in
//! included, need the request's `Origin` (or, without one, its `Referer`) to be the proxy's
//! own, scheme and host (CSRF); bearer-token clients carry no ambient credential a foreign
//! page could borrow, so they need none. The `{namespace}` and `{name}` of an API path are
//! DNS labels, checked before they go into any Kubernetes API URL.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use guildnet_api::workspace::facts::proxy_path;
use guildnet_api::workspace::rules::is_dns_label;
use guildnet_api::workspace::{Hint, Workspace, WorkspacePhase, validate_name};
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::auth::{Caller, Identity, Via};
use crate::authz::{Access, owns};
use crate::error::{ApiError, escape_html};
use crate::session::COOKIE_NAME;

/// A workspace as the dashboard shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSummary {
    /// Its namespace (`metadata.namespace`).
    pub namespace: String,
    /// Its name (`metadata.name`), unique in the namespace.
    pub name: String,
    /// The owner id (`guildnet.io/owner` label), as in `/api/me`'s `ownerId`.
    pub owner: Option<String>,
    /// The owner's readable user name (`guildnet.io/owner-name` annotation).
    pub owner_name: Option<String>,
    /// The container image it runs (`spec.image`).
    pub image: String,
    /// `status.phase`: Pending, Running, Stopped or Failed; None before the first status.
    pub phase: Option<WorkspacePhase>,
    /// Whether a replica is ready (condition `Ready` is `True`).
    pub ready: bool,
    /// Whether `spec.lifecycle.suspend` is set.
    pub suspended: bool,
    /// Where the proxy serves it: `/w/<namespace>/<name>/`.
    pub url: String,
    /// `status.conditions`, as the operator wrote them.
    pub conditions: Vec<Condition>,
    /// `status.lastAccessTime` (RFC 3339): the last use a proxy recorded.
    pub last_access_time: Option<String>,
    /// When it was created (RFC 3339).
    pub creation_timestamp: Option<String>,
}

impl From<&Workspace> for WorkspaceSummary {
    fn from(ws: &Workspace) -> Self {
        let namespace = ws.metadata.namespace.clone().unwrap_or_default();
        let name = ws.metadata.name.clone().unwrap_or_default();
        let status = ws.status.clone().unwrap_or_default();
        Self {
            url: proxy_path(&namespace, &name),
            owner: ws.owner_id().map(str::to_owned),
            owner_name: ws.owner_name().map(str::to_owned),
            image: ws.spec.image.clone(),
            phase: status.phase,
            ready: status.is_ready(),
            suspended: ws.is_suspended(),
            conditions: status.conditions,
            last_access_time: status.last_access_time.map(|t| t.0.to_string()),
            creation_timestamp: ws
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            namespace,
            name,
        }
    }
}

/// `GET /api/me`
pub async fn me(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(&headers, peer.ip()).await?;
    Ok(Json(json!({
        "user": caller.identity.username,
        "groups": caller.identity.groups,
        "ownerId": caller.identity.owner_id(),
    }))
    .into_response())
}

/// `GET /api/workspaces`: the workspaces the caller may open: their own, and all of each
/// namespace where RBAC grants `get workspaces/proxy`. (Merely listing them, as `kubectl get`
/// may, is not enough: the dashboard shows what one can use.)
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.require(&headers, peer.ip()).await?;
    let mut all = state.workspaces.state();
    all.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let namespace = |ws: &Workspace| ws.metadata.namespace.clone().unwrap_or_default();
    let foreign = all.iter().filter(|ws| !owns(&caller.identity, ws));
    let openable = state
        .authz
        .namespaces_granting(
            &caller.identity,
            Access::OPEN_WORKSPACE,
            foreign.map(|ws| namespace(ws)),
        )
        .await;
    let items: Vec<WorkspaceSummary> = all
        .iter()
        .filter(|ws| owns(&caller.identity, ws) || openable.contains(&namespace(ws)))
        .map(|ws| WorkspaceSummary::from(ws.as_ref()))
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// What the launch form sends.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchRequest {
    /// Where to make it; `default` when absent or blank.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Workspace's name (`metadata.name`), surrounding spaces trimmed.
    pub name: String,
    /// The container image to run (`spec.image`), surrounding spaces trimmed.
    pub image: String,
    /// The resource profile (`spec.hint`): `latency`, `compute` or `memory`.
    #[serde(default)]
    pub hint: Option<Hint>,
    /// `spec.lifecycle.idleTimeout`, e.g. `30m`; ignored when blank.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Persistent volumes to mount (`spec.volumes`); none by default.
    #[serde(default)]
    pub volumes: Vec<LaunchVolume>,
}

/// A persistent volume the launch form asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchVolume {
    /// Its name within the workspace, e.g. `home`.
    pub name: String,
    /// Where the container sees it, e.g. `/home/coder`.
    pub mount_path: String,
    /// Its claim's size (`persistent.size`), a quantity such as `1Gi`.
    pub size: String,
}

/// The Workspace a launch request asks for; the webhook fills in the defaults.
pub fn launch_manifest(request: &LaunchRequest) -> serde_json::Value {
    let mut spec = json!({ "image": request.image.trim() });
    if let Some(hint) = request.hint {
        spec["hint"] = json!(hint);
    }
    if let Some(idle) = request
        .idle_timeout
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        spec["lifecycle"] = json!({ "idleTimeout": idle });
    }
    if !request.volumes.is_empty() {
        spec["volumes"] = request
            .volumes
            .iter()
            .map(|v| json!({"name": v.name, "mountPath": v.mount_path, "persistent": {"size": v.size}}))
            .collect();
    }
    json!({
        "apiVersion": Workspace::api_version(&()),
        "kind": Workspace::kind(&()),
        "metadata": {"name": request.name.trim(), "namespace": namespace_of(request)},
        "spec": spec,
    })
}

fn namespace_of(request: &LaunchRequest) -> &str {
    request
        .namespace
        .as_deref()
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// `POST /api/workspaces`
pub async fn launch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = writer(&state, &headers, peer).await?;
    require_json(&headers)?;
    let request: LaunchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid launch request: {e}")))?;
    let namespace = namespace_of(&request).to_owned();
    let manifest = serde_json::to_vec(&launch_manifest(&request))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let http_request = kube::core::Request::new(Workspace::url_path(&(), Some(&namespace)))
        .create(&PostParams::default(), manifest)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let created: Workspace = as_user(&state, &caller.identity, http_request).await?;
    Ok((StatusCode::CREATED, Json(WorkspaceSummary::from(&created))).into_response())
}

/// `POST /api/workspaces/{ns}/{name}/suspend`
pub async fn suspend(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_suspended(state, peer, headers, path, true).await
}

/// `POST /api/workspaces/{ns}/{name}/resume`: also how a workspace held for quota is
/// started again once there is room.
pub async fn resume(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_suspended(state, peer, headers, path, false).await
}

async fn set_suspended(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    suspend: bool,
) -> Result<Response, ApiError> {
    let caller = writer(&state, &headers, peer).await?;
    check_path_parameters(&namespace, &name)?;
    let patch = Patch::Merge(json!({"spec": {"lifecycle": {"suspend": suspend}}}));
    let http_request = kube::core::Request::new(Workspace::url_path(&(), Some(&namespace)))
        .patch(&name, &PatchParams::default(), &patch)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let patched: Workspace = as_user(&state, &caller.identity, http_request).await?;
    Ok(Json(WorkspaceSummary::from(&patched)).into_response())
}

/// `DELETE /api/workspaces/{ns}/{name}`
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = writer(&state, &headers, peer).await?;
    check_path_parameters(&namespace, &name)?;
    let http_request = kube::core::Request::new(Workspace::url_path(&(), Some(&namespace)))
        .delete(&name, &DeleteParams::background())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let _: serde_json::Value = as_user(&state, &caller.identity, http_request).await?;
    Ok(Json(json!({})).into_response())
}

/// The `{namespace}` and `{name}` of an API path (`/api/workspaces/{namespace}/{name}/…`),
/// checked before they go into a Kubernetes API URL, where `/`, `?`, `#` or `%` would name
/// another object or add query parameters: the namespace must be a DNS-1123 label, the name
/// a workspace name (a DNS-1035 label of at most 63 characters). 400 names the parameter.
pub fn check_path_parameters(namespace: &str, name: &str) -> Result<(), ApiError> {
    check_namespace_parameter(namespace)?;
    validate_name(name)
        .map_err(|error| ApiError::bad_request(format!("path parameter name is invalid: {error}")))
}

/// The `{namespace}` of an API path: a DNS-1123 label, else 400 naming the parameter.
pub fn check_namespace_parameter(namespace: &str) -> Result<(), ApiError> {
    if is_dns_label(namespace) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "path parameter namespace {namespace:?} is not a DNS-1123 label: use 1 to 63 \
         lowercase letters, digits and -, starting and ending with a letter or digit"
    )))
}

/// The caller of a write, once the request is shown to come from the proxy's own pages and,
/// for a session, its identity to have been checked within `--session-revalidate-after`.
pub(crate) async fn writer(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    let caller = state.auth.require_for_write(headers, peer.ip()).await?;
    if caller.via != Via::Bearer {
        same_origin(state, headers, peer)?;
    }
    Ok(caller)
}

/// [`check_origin`] against the scheme this request came in with and `--allowed-origin`.
fn same_origin(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    let scheme = state.public_scheme(headers, peer.ip());
    check_origin(headers, &state.allowed_origins, &scheme)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send the launch request as JSON with Content-Type: application/json",
        ))
    }
}

/// CSRF: a write from a browser must come from the proxy's own origin — `scheme`, the one
/// the browser used (see [`crate::app::Shared::public_scheme`]), and the Host it came to — or
/// from one of `--allowed-origin`. The `Origin` header says where it came from; a request
/// without one is judged by the origin of its `Referer`, and one with neither is refused.
pub fn check_origin(headers: &HeaderMap, allowed: &[String], scheme: &str) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CrossOriginRefused",
            format!("{why}; changes are only accepted from the GuildNet dashboard's own pages"),
        ))
    };
    let origin = match (headers.get(header::ORIGIN), headers.get(header::REFERER)) {
        (Some(origin), _) => origin.to_str().ok().map(str::to_owned),
        (None, Some(referer)) => referer.to_str().ok().and_then(origin_of_url),
        (None, None) => return refuse("the request has no Origin or Referer header"),
    };
    let Some(origin) = origin else {
        return refuse("the request's Origin or Referer cannot be read");
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(&origin))
    {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((origin_scheme, authority)), Some(host))
            if origin_scheme.eq_ignore_ascii_case(scheme)
                && !authority.is_empty()
                && authority.eq_ignore_ascii_case(host) =>
        {
            Ok(())
        }
        _ => refuse(&format!(
            "origin {origin:?} is not this site ({scheme}://{})",
            host.unwrap_or_default()
        )),
    }
}

/// The origin (`scheme://host[:port]`) of an absolute URL such as a `Referer`; None when it
/// is not one.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    // Userinfo never appears in a browser's Referer; refuse rather than misread it.
    (!scheme.is_empty() && !authority.is_empty() && !authority.contains('@'))
        .then(|| format!("{scheme}://{authority}"))
}

/// Sends `request` to the API server as `identity`: its user name and groups, which is what
/// RBAC and the webhook decide on. Uid and extras are not sent, so the proxy needs no
/// permission to impersonate them.
async fn as_user<K: serde::de::DeserializeOwned>(
    state: &AppState,
    identity: &Identity,
    mut request: http::Request<Vec<u8>>,
) -> Result<K, ApiError> {
    let headers = request.headers_mut();
    let mut add = |name: &'static str, value: &str| -> Result<(), ApiError> {
        let name = HeaderName::from_static(name);
        let value = HeaderValue::from_str(value)
            .map_err(|_| ApiError::bad_request("the user's identity cannot be sent in a header"))?;
        headers.append(name, value);
        Ok(())
    };
    add("impersonate-user", &identity.username)?;
    for group in &identity.groups {
        add("impersonate-group", group)?;
    }
    state
        .client
        .request(request)
        .await
        .map_err(ApiError::from_kube)
}

/// The login page with `error` and `next` filled in.
fn login_page(status: StatusCode, error: &str, next: &str) -> Response {
    let page = super::pages::LOGIN
        .replace("{{error}}", &escape_html(error))
        .replace("{{next}}", &escape_html(next));
    (status, Html(page)).into_response()
}

/// Where to go after logging in: `next` when it is a path on this site, else `/`.
fn local_path(next: Option<&str>) -> &str {
    next.filter(|n| is_local_path(n)).unwrap_or("/")
}

/// Whether `next` is a path on this site that a browser cannot read as another one: a single
/// `/` followed by anything but `/` or `\` (`//host` and `/\host` are other sites to a
/// browser), no `\` at all, only visible ASCII as sent, and — percent-decoded, as whatever
/// reads it next may decode it — still so, with no control characters or whitespace
/// (`/%09/host` is `//host` once a browser drops the tab; CR/LF would split the header).
fn is_local_path(next: &str) -> bool {
    let one_slash = |path: &str| {
        let mut chars = path.chars();
        chars.next() == Some('/')
            && !matches!(chars.next(), Some('/' | '\\'))
            && !path.contains('\\')
    };
    let decoded = percent_decode_str(next).decode_utf8_lossy();
    next.bytes().all(|b| b.is_ascii_graphic())
        && one_slash(next)
        && one_slash(&decoded)
        && !decoded.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// `GET /login`'s query: `next`, the local path to go to once logged in.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`
pub async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    if state.auth.mode() != crate::config::AuthMode::Token {
        return Redirect::to("/").into_response();
    }
    login_page(StatusCode::OK, "", local_path(query.next.as_deref()))
}

/// What the login page posts: the bearer token, and `next`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: checks the token once (TokenReview) and keeps the identity in a session
/// cookie; the token itself is not kept. Only from the proxy's own login page (CSRF: a
/// foreign page must not log a browser in as someone else).
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(error) = same_origin(&state, &headers, peer) {
        return error.for_client(&headers);
    }
    let next = local_path(form.next.as_deref()).to_owned();
    if state.auth.mode() != crate::config::AuthMode::Token {
        return Redirect::to(&next).into_response();
    }
    let client = state.auth.client_address(&headers, peer.ip());
    let identity = match state.auth.review_token(form.token.trim(), client).await {
        Ok(identity) => identity,
        Err(error) if error.status == StatusCode::UNAUTHORIZED => {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "That token was not accepted by the cluster.",
                &next,
            );
        }
        Err(error) => {
            let mut page = login_page(error.status, &error.message, &next);
            if let Some(seconds) = error.retry_after {
                page.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return page;
        }
    };
    let value = state.auth.sessions.issue(&identity, SystemTime::now());
    let cookie = session_cookie(
        &value,
        state.auth.sessions.ttl().as_secs(),
        cookie_domain(state.base_domain.as_deref(), &headers),
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /logout`: revokes the session (at once on this replica, and in the session Secret
/// for the others, which read it every `--session-revocation-poll`) and clears the cookie.
/// When the revocation cannot be recorded for the other replicas, the cookie is still
/// cleared but the answer is `503`, so the user knows to try again.
pub async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    same_origin(&state, &headers, peer)?;
    let now = SystemTime::now();
    let recorded = match crate::auth::session_cookie(&headers)
        .and_then(|value| state.auth.sessions.verify_session(value, now))
    {
        Some(session) => state.auth.sessions.revoke(&session, now).await,
        None => Ok(()),
    };
    let mut response = match recorded {
        Ok(()) => Redirect::to("/login").into_response(),
        Err(error) => {
            tracing::warn!(%error, "recording a logout for the other replicas");
            let mut refusal = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "LogoutNotShared",
                "the logout could not be recorded for every replica of the proxy; try again",
            );
            refusal.retry_after = Some(1);
            refusal.for_client(&headers)
        }
    };
    let cookie = session_cookie("", 0, cookie_domain(state.base_domain.as_deref(), &headers));
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The session cookie's `Domain`: in subdomain mode, when the login came to a host under the
/// base domain, that domain, so the one login reaches every workspace's host; otherwise
/// none (the cookie belongs to the host the browser used; a foreign Domain would be dropped).
fn cookie_domain<'a>(base_domain: Option<&'a str>, headers: &HeaderMap) -> Option<&'a str> {
    let base = base_domain?.trim_matches('.');
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host
        .rsplit_once(':')
        .map_or(host, |(name, _)| name)
        .to_ascii_lowercase();
    let base_lower = base.to_ascii_lowercase();
    (host == base_lower || host.ends_with(&format!(".{base_lower}"))).then_some(base)
}

/// The session cookie: HttpOnly (scripts, including workspaces' in path mode, can't read
/// it), Secure, SameSite=Strict (never sent on cross-site requests).
fn session_cookie(value: &str, max_age: u64, domain: Option<&str>) -> String {
    let domain = domain.map(|d| format!("; Domain={d}")).unwrap_or_default();
    format!(
        "{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict{domain}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn writes_must_come_from_this_origin() {
        let ok = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "http://127.0.0.1:8090"),
        ]);
        assert!(check_origin(&ok, &[], "http").is_ok());
        let foreign = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "https://evil.example"),
        ]);
        let err = check_origin(&foreign, &[], "http").unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("evil.example"));
        let missing = headers(&[("host", "127.0.0.1:8090")]);
        assert!(check_origin(&missing, &[], "http").is_err());
        let listed = headers(&[
            ("host", "proxy:8090"),
            ("origin", "https://guildnet.example.com"),
        ]);
        assert!(check_origin(&listed, &["https://guildnet.example.com/".into()], "http").is_ok());
    }

    #[test]
    fn the_origin_of_a_write_must_match_in_scheme_too() {
        let plain = headers(&[
            ("host", "guildnet.example.com"),
            ("origin", "http://guildnet.example.com"),
        ]);
        // The browser used https; a page at http://guildnet.example.com (a network attacker
        // can serve one) is another origin.
        let err = check_origin(&plain, &[], "https").unwrap_err();
        assert_eq!(err.reason, "CrossOriginRefused");
        assert!(check_origin(&plain, &[], "http").is_ok());
        let secure = headers(&[
            ("host", "guildnet.example.com"),
            ("origin", "HTTPS://GuildNet.example.com"),
        ]);
        assert!(check_origin(&secure, &[], "https").is_ok());
        assert!(check_origin(&secure, &[], "http").is_err());
        // Nothing after the scheme is not this site.
        let empty = headers(&[("host", ""), ("origin", "https://")]);
        assert!(check_origin(&empty, &[], "https").is_err());
        let null = headers(&[("host", "guildnet.example.com"), ("origin", "null")]);
        assert!(check_origin(&null, &[], "https").is_err());
    }

    #[test]
    fn a_referer_stands_in_for_a_missing_origin() {
        let own = headers(&[
            ("host", "guildnet.example.com"),
            ("referer", "https://guildnet.example.com/login?next=%2F"),
        ]);
        assert!(check_origin(&own, &[], "https").is_ok());
        assert!(check_origin(&own, &[], "http").is_err());
        for referer in [
            "https://evil.example/guildnet.example.com",
            "https://guildnet.example.com.evil.example/",
            "https://guildnet.example.com@evil.example/",
            "/login",
        ] {
            let foreign = headers(&[("host", "guildnet.example.com"), ("referer", referer)]);
            assert!(check_origin(&foreign, &[], "https").is_err(), "{referer}");
        }
        // An Origin, when sent, decides: a same-site Referer does not rescue a foreign Origin.
        let both = headers(&[
            ("host", "guildnet.example.com"),
            ("origin", "https://evil.example"),
            ("referer", "https://guildnet.example.com/"),
        ]);
        assert!(check_origin(&both, &[], "https").is_err());
    }

    #[test]
    fn dashboard_api_path_parameters_must_be_dns_labels() {
        assert_eq!(check_path_parameters("team", "ide"), Ok(()));
        assert_eq!(check_path_parameters("team-2", "ide-2"), Ok(()));
        for (namespace, name, parameter) in [
            ("team", "ide#", "name"),
            ("team", "ide?dryRun=All", "name"),
            ("team", "ide/status", "name"),
            ("team", "ide%2f", "name"),
            ("team", "2ide", "name"),
            ("team", "", "name"),
            ("team?x=1", "ide", "namespace"),
            ("team/ws", "ide", "namespace"),
            ("Team", "ide", "namespace"),
            ("", "ide", "namespace"),
        ] {
            let error = check_path_parameters(namespace, name).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{namespace}/{name}");
            assert!(
                error
                    .message
                    .starts_with(&format!("path parameter {parameter} ")),
                "{namespace}/{name}: {}",
                error.message
            );
        }
        let long = "a".repeat(64);
        assert!(check_path_parameters("team", &long).is_err());
        assert!(check_path_parameters(&long, "ide").is_err());
    }

    #[test]
    fn login_only_returns_to_local_paths() {
        for good in [
            "/",
            "/w/team/ide/",
            "/w/team/ide/x?y=1#z",
            "/w/team/ide/file%2Fname",
            "/w/team/ide/%25",
        ] {
            assert_eq!(local_path(Some(good)), good, "{good}");
        }
        for bad in [
            "//evil.example",
            "///evil.example",
            "https://evil.example",
            "HTTPS://evil.example",
            "javascript:alert(1)",
            "/\\evil.example",
            "/w/\\evil.example",
            "/%09/evil.example",
            "/\t/evil.example",
            "/%2F/evil.example",
            "/%2fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/x%0D%0ASet-Cookie:%20a=b",
            "/x\r\nSet-Cookie: a=b",
            "/x%00",
            "/a b",
            "/w/team/ide/a%20b",
            "/\u{e9}",
            "/%C2%A0/evil.example",
            " /x",
            "",
            "relative",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_launch_request_becomes_a_workspace() {
        let request: LaunchRequest = serde_json::from_value(json!({
            "name": " ide ", "image": "codercom/code-server:4.96.4", "hint": "compute",
            "idleTimeout": "30m", "volumes": [{"name": "home", "mountPath": "/home/coder", "size": "1Gi"}],
        }))
        .unwrap();
        assert_eq!(
            launch_manifest(&request),
            json!({
                "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
                "metadata": {"name": "ide", "namespace": "default"},
                "spec": {
                    "image": "codercom/code-server:4.96.4", "hint": "compute",
                    "lifecycle": {"idleTimeout": "30m"},
                    "volumes": [{"name": "home", "mountPath": "/home/coder", "persistent": {"size": "1Gi"}}],
                },
            })
        );
        let unknown = serde_json::from_value::<LaunchRequest>(
            json!({"name": "a", "image": "b", "privileged": true}),
        );
        assert!(unknown.unwrap_err().to_string().contains("privileged"));
    }

    #[test]
    fn the_cookie_domain_is_the_base_domain_only_under_it() {
        let host = |h: &'static str| headers(&[("host", h)]);
        let base = Some("ws.example.com");
        assert_eq!(cookie_domain(base, &host("guildnet.ws.example.com")), base);
        assert_eq!(cookie_domain(base, &host("WS.example.com:8443")), base);
        assert_eq!(cookie_domain(base, &host("127.0.0.1:8090")), None);
        assert_eq!(cookie_domain(base, &host("evilws.example.com")), None);
        assert_eq!(cookie_domain(None, &host("guildnet.ws.example.com")), None);
    }

    #[test]
    fn the_session_cookie_is_locked_down() {
        let cookie = session_cookie("v", 60, None);
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
    }
}
