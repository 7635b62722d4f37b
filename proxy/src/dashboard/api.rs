//! The dashboard's JSON API and the login page.
//!
//! Reads come from the proxy's caches, filtered to what the caller may see. Writes (launch,
//! suspend, resume, delete) go to the API server impersonating the caller, so RBAC and the
//! admission webhook decide exactly as they would for `kubectl`. Browser writes need the
//! request's `Origin` to be the proxy's own (CSRF); bearer-token clients carry no ambient
//! credential a foreign page could borrow, so they need none.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use guildnet_api::workspace::facts::proxy_path;
use guildnet_api::workspace::{Hint, Workspace, WorkspacePhase};
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::auth::{Caller, Identity, Via};
use crate::authz::owns;
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
    let mut items = Vec::new();
    let mut openable: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for ws in all {
        let namespace = ws.metadata.namespace.clone().unwrap_or_default();
        let visible = owns(&caller.identity, &ws)
            || match openable.get(&namespace) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = state.authz.may_open_all(&caller.identity, &namespace).await;
                    openable.insert(namespace, allowed);
                    allowed
                }
            };
        if visible {
            items.push(WorkspaceSummary::from(ws.as_ref()));
        }
    }
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
    let http_request = kube::core::Request::new(Workspace::url_path(&(), Some(&namespace)))
        .delete(&name, &DeleteParams::background())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let _: serde_json::Value = as_user(&state, &caller.identity, http_request).await?;
    Ok(Json(json!({})).into_response())
}

/// The caller of a write, once the request is shown to come from the proxy's own pages.
async fn writer(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, ApiError> {
    let caller = state.auth.require(headers, peer.ip()).await?;
    if caller.via != Via::Bearer {
        check_origin(headers, &state.allowed_origins)?;
    }
    Ok(caller)
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

/// CSRF: a write from a browser must name the proxy's own origin (the Host it came to) or
/// one of `--allowed-origin`.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CrossOriginRefused",
            format!("{why}; changes are only accepted from the GuildNet dashboard's own pages"),
        ))
    };
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return refuse("the request has no Origin header");
    };
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => refuse(&format!("origin {origin:?} is not this site")),
    }
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

/// Where to go after logging in: a path on this site only (no `//host` or `https://…`).
fn local_path(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/")
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
/// cookie; the token itself is not kept.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref()).to_owned();
    if state.auth.mode() != crate::config::AuthMode::Token {
        return Redirect::to(&next).into_response();
    }
    let Some(identity) = state.auth.review_token(form.token.trim()).await else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That token was not accepted by the cluster.",
            &next,
        );
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

/// `POST /logout`
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_origin(&headers, &state.allowed_origins)?;
    let mut response = Redirect::to("/login").into_response();
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
        assert!(check_origin(&ok, &[]).is_ok());
        let foreign = headers(&[
            ("host", "127.0.0.1:8090"),
            ("origin", "https://evil.example"),
        ]);
        let err = check_origin(&foreign, &[]).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("evil.example"));
        let missing = headers(&[("host", "127.0.0.1:8090")]);
        assert!(check_origin(&missing, &[]).is_err());
        let listed = headers(&[
            ("host", "proxy:8090"),
            ("origin", "https://guildnet.example.com"),
        ]);
        assert!(check_origin(&listed, &["https://guildnet.example.com/".into()]).is_ok());
    }

    #[test]
    fn login_only_returns_to_local_paths() {
        assert_eq!(local_path(Some("/w/team/ide/")), "/w/team/ide/");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "relative",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
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
