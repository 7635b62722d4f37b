//! The headers that cross the proxy: what the workspace is told and must not see on the
//! way in, and the rewrites that let an app written for `/` work under `/w/{ns}/{name}/` on
//! the way out. Pure functions of the headers, so every rule is tested here.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::session::COOKIE_NAME;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The widest scope a service worker script may claim (W3C Service Workers, "Update").
const SERVICE_WORKER_ALLOWED: HeaderName = HeaderName::from_static("service-worker-allowed");

/// Headers that tell an app who the client is, besides the X-Forwarded-* the proxy sets
/// itself: believed from a `--trusted-proxy` only, so removed from everyone else's requests.
const CLIENT_CLAIMS: [HeaderName; 2] = [header::FORWARDED, X_REAL_IP];

/// Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// How the browser reached the proxy: believed from X-Forwarded-* only when a trusted
/// front proxy sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicOrigin {
    /// `http` or `https`, for X-Forwarded-Proto.
    pub scheme: HeaderValue,
    /// The Host the browser used, for X-Forwarded-Host.
    pub host: HeaderValue,
    /// The X-Forwarded-For chain, ending with the peer's address.
    pub forwarded_for: HeaderValue,
}

impl PublicOrigin {
    /// The origin of a request with `headers` from `peer`. `trusted_proxy`: whether `peer`
    /// is a `--trusted-proxy`, whose X-Forwarded-* are believed; `own_scheme`: what the
    /// proxy itself serves (`http`, or `https` when it terminates TLS).
    pub fn of(
        headers: &HeaderMap,
        peer: IpAddr,
        trusted_proxy: bool,
        own_scheme: &'static str,
    ) -> Self {
        let forwarded =
            |name: &HeaderName| trusted_proxy.then(|| headers.get(name).cloned()).flatten();
        let host = headers
            .get(header::HOST)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""));
        let forwarded_for = match forwarded(&X_FORWARDED_FOR)
            .as_ref()
            .and_then(|v| v.to_str().ok())
        {
            Some(chain) => format!("{chain}, {peer}"),
            None => peer.to_string(),
        };
        Self {
            scheme: forwarded(&X_FORWARDED_PROTO)
                .unwrap_or_else(|| HeaderValue::from_static(own_scheme)),
            host: forwarded(&X_FORWARDED_HOST).unwrap_or(host),
            forwarded_for: HeaderValue::from_str(&forwarded_for)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        }
    }
}

/// One request on its way to a workspace: what decides the headers either way.
pub struct Forwarding<'a> {
    /// How the browser reached the proxy, for the X-Forwarded-* headers.
    pub origin: PublicOrigin,
    /// `/w/{ns}/{name}`, or empty in subdomain mode.
    pub prefix: &'a str,
    /// The endpoint the request goes to.
    pub upstream: SocketAddr,
    /// The `Upgrade` value of a WebSocket handshake (see [`websocket_upgrade`]), which
    /// crosses the proxy; None for plain HTTP.
    pub websocket: Option<HeaderValue>,
    /// Whether the request came from a `--trusted-proxy`, whose `Forwarded` and `X-Real-IP`
    /// reach the workspace; anyone else's are removed.
    pub trusted_proxy: bool,
    /// Whether the request's `Authorization: Bearer` headers may reach the workspace:
    /// only with `--forward-authorization`, and never a token the proxy knows as a
    /// Kubernetes credential (see [`forwards_bearer_tokens`]).
    pub forward_bearer: bool,
    /// Header mode's identity headers, which only the proxy may read.
    pub identity_headers: &'a [HeaderName],
}

/// Whether a request's `Authorization: Bearer` headers may reach the workspace:
/// `forward_authorization` (`--forward-authorization`) is set, none of them authenticated the
/// request (`authenticated_by_bearer`), and none is a token the proxy knows as a Kubernetes
/// credential (`kubernetes_token`: a TokenReview accepted it recently). Without the flag, no
/// bearer token a client sends ever reaches a workspace.
pub fn forwards_bearer_tokens(
    headers: &HeaderMap,
    forward_authorization: bool,
    authenticated_by_bearer: bool,
    kubernetes_token: impl Fn(&str) -> bool,
) -> bool {
    forward_authorization
        && !authenticated_by_bearer
        && !bearer_tokens(headers).any(kubernetes_token)
}

/// The tokens of every `Authorization: Bearer …` header.
fn bearer_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| {
            let (scheme, token) = value.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Whether `value` is an `Authorization: Bearer` credential (any case, token or not).
fn is_bearer(value: &HeaderValue) -> bool {
    let value = value.as_bytes();
    let value = &value[value.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    value.len() >= 6
        && value[..6].eq_ignore_ascii_case(b"bearer")
        && value.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

/// Removes the `Authorization: Bearer` headers, keeping any other scheme (an app's Basic).
fn strip_bearer_authorization(headers: &mut HeaderMap) {
    if !headers.get_all(header::AUTHORIZATION).iter().any(is_bearer) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|value| !is_bearer(value))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for value in kept {
        headers.append(header::AUTHORIZATION, value);
    }
}

/// The browser's request headers made the workspace's: hop-by-hop headers, the proxy's
/// session cookie, `Authorization: Bearer` (unless [`Forwarding::forward_bearer`]) and
/// identity headers removed, and
/// `Forwarded` and `X-Real-IP` too unless a trusted proxy sent them;
/// X-Forwarded-For/-Proto/-Host set from [`PublicOrigin`] and X-Forwarded-Prefix from the
/// prefix (removed in subdomain mode, so a client cannot forge it); a WebSocket handshake's
/// `Connection: upgrade` and `Upgrade` kept. `Host` stays the browser's, so apps comparing
/// `Origin` with `Host` (code-server's WebSocket check) accept the request.
pub fn request_headers(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    strip_hop_by_hop(headers);
    strip_session_cookie(headers);
    if !forwarding.forward_bearer {
        strip_bearer_authorization(headers);
    }
    for name in forwarding.identity_headers {
        headers.remove(name);
    }
    if !forwarding.trusted_proxy {
        for name in &CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
    let origin = &forwarding.origin;
    headers.insert(X_FORWARDED_FOR, origin.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, origin.scheme.clone());
    headers.insert(X_FORWARDED_HOST, origin.host.clone());
    if forwarding.prefix.is_empty() {
        headers.remove(X_FORWARDED_PREFIX);
    } else if let Ok(prefix) = HeaderValue::from_str(forwarding.prefix) {
        headers.insert(X_FORWARDED_PREFIX, prefix);
    }
    keep_websocket_upgrade(headers, forwarding.websocket.as_ref());
}

/// The workspace's response headers made the browser's: hop-by-hop headers removed,
/// `Location`, `Set-Cookie` and `Service-Worker-Allowed` moved under the prefix, and when
/// the workspace switched protocols (101) on a WebSocket handshake, `Connection: upgrade`
/// and `Upgrade` kept.
pub fn response_headers(headers: &mut HeaderMap, forwarding: &Forwarding<'_>, switched: bool) {
    strip_hop_by_hop(headers);
    confine_service_worker_scope(headers, forwarding.prefix);
    if let Some(location) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
        let upstream_authority = forwarding.upstream.to_string();
        let origins = Origins {
            prefix: forwarding.prefix,
            public_host: forwarding.origin.host.to_str().unwrap_or_default(),
            public_scheme: forwarding.origin.scheme.to_str().unwrap_or("http"),
            upstream_authority: &upstream_authority,
        };
        let rewritten = rewrite_location(location, &origins);
        if let Ok(value) = HeaderValue::from_str(&rewritten) {
            headers.insert(header::LOCATION, value);
        }
    }
    let cookies: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .map(|c| rewrite_set_cookie(c, forwarding.prefix))
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }
    keep_websocket_upgrade(headers, forwarding.websocket.as_ref().filter(|_| switched));
}

/// The `Upgrade` value of a WebSocket handshake (`Connection: upgrade` + `Upgrade`).
pub fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    (asks_upgrade
        && protocol
            .to_str()
            .is_ok_and(|p| p.eq_ignore_ascii_case("websocket")))
    .then(|| protocol.clone())
}

/// Puts back the upgrade headers [`strip_hop_by_hop`] removed, for a WebSocket handshake.
fn keep_websocket_upgrade(headers: &mut HeaderMap, websocket: Option<&HeaderValue>) {
    if let Some(protocol) = websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Removes hop-by-hop headers, including those the Connection header names. `Upgrade` goes
/// too; the WebSocket path puts it back.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Drops the proxy's session cookie from the Cookie headers, keeping the app's own cookies.
fn strip_session_cookie(headers: &mut HeaderMap) {
    let carries_ours = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains(COOKIE_NAME)));
    if !carries_ours {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name) != COOKIE_NAME)
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Where the workspace answered from and where the browser sees it.
struct Origins<'a> {
    /// `/w/{ns}/{name}`, or empty in subdomain mode.
    prefix: &'a str,
    /// The Host the browser used (the proxy's).
    public_host: &'a str,
    /// `http` or `https`, as the browser sees the proxy.
    public_scheme: &'a str,
    /// `ip:port` the request went to.
    upstream_authority: &'a str,
}

/// A `Location` the browser can follow: absolute paths and URLs pointing at the workspace
/// (or at the proxy's host without the prefix) move under the prefix; relative references
/// and other sites are left alone, as are paths already under the prefix (apps honouring
/// `X-Forwarded-Prefix`).
fn rewrite_location(location: &str, o: &Origins<'_>) -> String {
    if location.starts_with('/') && !location.starts_with("//") {
        return prefixed(location, o.prefix);
    }
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_owned();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return location.to_owned();
    }
    let (authority, path) = rest
        .find(['/', '?', '#'])
        .map_or((rest, "/"), |i| rest.split_at(i));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if authority.eq_ignore_ascii_case(o.upstream_authority)
        || authority.eq_ignore_ascii_case(o.public_host)
    {
        format!(
            "{}://{}{}",
            o.public_scheme,
            o.public_host,
            prefixed(&path, o.prefix)
        )
    } else {
        location.to_owned()
    }
}

fn prefixed(path: &str, prefix: &str) -> String {
    if prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(['/', '?', '#']))
    {
        path.to_owned()
    } else {
        format!("{prefix}{path}")
    }
}

/// Keeps the service workers of a workspace in path mode under its prefix. A worker controls
/// every page under its scope, on the whole origin — the dashboard's and `/login`'s too — and
/// a script may claim a scope wider than its own directory only up to what its
/// `Service-Worker-Allowed` header allows (code-server sends `/`). So in path mode the header
/// is moved under the prefix like a cookie's `Path` (see [`service_worker_scope`]), or
/// removed when it is not a plain path, or when there is more than one; without it the
/// browser's limit is the script's own directory, which is inside the prefix. In subdomain
/// mode (`prefix` empty) the workspace has an origin of its own and the header stays.
fn confine_service_worker_scope(headers: &mut HeaderMap, prefix: &str) {
    if prefix.is_empty() || !headers.contains_key(&SERVICE_WORKER_ALLOWED) {
        return;
    }
    let mut values = headers.get_all(&SERVICE_WORKER_ALLOWED).iter();
    let confined = match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|value| service_worker_scope(value, prefix))
            .and_then(|scope| HeaderValue::from_str(&scope).ok()),
        _ => None,
    };
    headers.remove(&SERVICE_WORKER_ALLOWED);
    if let Some(scope) = confined {
        headers.insert(SERVICE_WORKER_ALLOWED, scope);
    }
}

/// A `Service-Worker-Allowed` value under `prefix` (`/w/{ns}/{name}`, not empty): an
/// absolute path moves under the prefix (`/` → `/w/ns/name/`, `/x/` → `/w/ns/name/x/`), one
/// already under it stays, and the prefix itself gets its slash (the browser compares scopes
/// as strings: `/w/ns/name` would admit `/w/ns/namesake/`). None for anything else, which the
/// browser would resolve against the script's URL in ways that could leave the prefix: an
/// absolute URL (`https://host/`, `//host/`), a relative reference, dot segments (also
/// percent-encoded, `%2e%2e`), backslashes (`/\host`), queries, fragments, lists, spaces and
/// control characters (which URL parsing strips).
fn service_worker_scope(value: &str, prefix: &str) -> Option<String> {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'\\' | b'?' | b'#' | b',' | b'"' | b'\''));
    if !plain || !value.starts_with('/') || value.starts_with("//") {
        return None;
    }
    let dot_segment = value.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".." || decoded.contains(['/', '\\'])
    });
    if dot_segment {
        return None;
    }
    Some(if value == prefix {
        format!("{prefix}/")
    } else if value
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        value.to_owned()
    } else {
        format!("{prefix}{value}")
    })
}

/// A `Set-Cookie` scoped to the workspace: no `Domain` (the cookie belongs to the proxy's
/// origin), `Path` under the prefix (workspaces in path mode don't see each other's
/// cookies), and `Secure`.
fn rewrite_set_cookie(set_cookie: &str, prefix: &str) -> String {
    let mut parts = set_cookie.split(';').map(str::trim);
    let mut out = vec![parts.next().unwrap_or_default().to_owned()];
    let mut path = None;
    let mut secure = false;
    for attribute in parts.filter(|a| !a.is_empty()) {
        let name = attribute
            .split_once('=')
            .map_or(attribute, |(n, _)| n)
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "domain" => {}
            "path" => {
                let value = attribute.split_once('=').map_or("", |(_, v)| v.trim());
                path = Some(value.to_owned());
            }
            "secure" => {
                secure = true;
                out.push(attribute.to_owned());
            }
            _ => out.push(attribute.to_owned()),
        }
    }
    let path = match path.filter(|p| p.starts_with('/')) {
        Some(p) => prefixed(&p, prefix),
        None if prefix.is_empty() => "/".to_owned(),
        None => format!("{prefix}/"),
    };
    out.push(format!("Path={path}"));
    if !secure {
        out.push("Secure".to_owned());
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINS: Origins<'static> = Origins {
        prefix: "/w/team/ide",
        public_host: "guildnet.example.com",
        public_scheme: "https",
        upstream_authority: "10.244.0.7:8080",
    };

    #[test]
    fn locations_move_under_the_prefix() {
        let cases = [
            ("/login", "/w/team/ide/login"),
            ("/", "/w/team/ide/"),
            ("/?folder=/home", "/w/team/ide/?folder=/home"),
            ("/w/team/ide/already", "/w/team/ide/already"),
            ("/w/team/ide", "/w/team/ide"),
            ("/w/team/idea", "/w/team/ide/w/team/idea"),
            ("relative/path", "relative/path"),
            ("../up", "../up"),
            ("//evil.example.com/x", "//evil.example.com/x"),
            (
                "http://10.244.0.7:8080/login?x=1",
                "https://guildnet.example.com/w/team/ide/login?x=1",
            ),
            (
                "http://10.244.0.7:8080",
                "https://guildnet.example.com/w/team/ide/",
            ),
            (
                "https://guildnet.example.com/tree",
                "https://guildnet.example.com/w/team/ide/tree",
            ),
            (
                "https://guildnet.example.com/w/team/ide/tree",
                "https://guildnet.example.com/w/team/ide/tree",
            ),
            (
                "https://github.com/login/oauth",
                "https://github.com/login/oauth",
            ),
            ("mailto:a@b.c", "mailto:a@b.c"),
        ];
        for (location, want) in cases {
            assert_eq!(rewrite_location(location, &ORIGINS), want, "{location}");
        }
    }

    #[test]
    fn subdomain_mode_keeps_paths() {
        let origins = Origins {
            prefix: "",
            public_host: "ide--team.ws.example.com",
            ..ORIGINS
        };
        assert_eq!(rewrite_location("/login", &origins), "/login");
        assert_eq!(
            rewrite_location("http://10.244.0.7:8080/x", &origins),
            "https://ide--team.ws.example.com/x"
        );
        assert_eq!(
            rewrite_set_cookie("a=1; Domain=x", ""),
            "a=1; Path=/; Secure"
        );
    }

    #[test]
    fn cookies_are_scoped_to_the_workspace() {
        let cases = [
            ("key=v", "key=v; Path=/w/team/ide/; Secure"),
            ("key=v; Path=/", "key=v; Path=/w/team/ide/; Secure"),
            (
                "key=v; path=/api; HttpOnly",
                "key=v; HttpOnly; Path=/w/team/ide/api; Secure",
            ),
            (
                "key=v; Domain=10.244.0.7; Secure; SameSite=Lax",
                "key=v; Secure; SameSite=Lax; Path=/w/team/ide/",
            ),
            (
                "key=v; Path=/w/team/ide/x",
                "key=v; Path=/w/team/ide/x; Secure",
            ),
            (
                "key=v; Max-Age=0; Path=relative",
                "key=v; Max-Age=0; Path=/w/team/ide/; Secure",
            ),
            (
                "_xsrf=2|ab|cd; expires=Wed, 21 Oct 2026 07:28:00 GMT",
                "_xsrf=2|ab|cd; expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/w/team/ide/; Secure",
            ),
        ];
        for (cookie, want) in cases {
            assert_eq!(rewrite_set_cookie(cookie, "/w/team/ide"), want, "{cookie}");
        }
    }

    #[test]
    fn service_worker_scopes_stay_under_the_prefix() {
        let cases = [
            // code-server's: the whole origin, which would include the dashboard and /login.
            ("/", Some("/w/team/ide/")),
            ("/x/", Some("/w/team/ide/x/")),
            ("/static/sw/", Some("/w/team/ide/static/sw/")),
            // An app serving under the prefix (Jupyter's base_url) already names it.
            ("/w/team/ide/", Some("/w/team/ide/")),
            ("/w/team/ide/lab/", Some("/w/team/ide/lab/")),
            // Scopes are compared as strings: without the slash it would admit `idea`'s pages.
            ("/w/team/ide", Some("/w/team/ide/")),
            ("/w/team/idea/", Some("/w/team/ide/w/team/idea/")),
            ("/w/team/", Some("/w/team/ide/w/team/")),
            // Not a plain path: dropped, so the script's own directory is the limit.
            ("https://guildnet.example.com/", None),
            ("http://10.244.0.7:8080/", None),
            ("//guildnet.example.com/", None),
            ("/\\guildnet.example.com/", None),
            ("\\", None),
            ("", None),
            ("x/", None),
            ("./", None),
            ("../", None),
            ("/..", None),
            ("/../", None),
            ("/x/../../", None),
            ("/w/team/ide/../../", None),
            ("/%2e%2e/", None),
            ("/.%2E/", None),
            ("/%2e/", None),
            ("/x%2f..%2f/", None),
            ("/./", None),
            ("/ /", None),
            ("/.\t./", None),
            ("/a, /b", None),
            ("/?x", None),
            ("/#x", None),
            ("\"/\"", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                service_worker_scope(value, "/w/team/ide").as_deref(),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn service_worker_allowed_is_confined_in_path_mode_only() {
        let mut answered = headers(&[("service-worker-allowed", "/")]);
        response_headers(&mut answered, &forwarding(), false);
        assert_eq!(
            values(&answered, "service-worker-allowed"),
            ["/w/team/ide/"]
        );
        let mut foreign = headers(&[("service-worker-allowed", "https://guildnet.example.com/")]);
        response_headers(&mut foreign, &forwarding(), false);
        assert!(!foreign.contains_key("service-worker-allowed"));
        // Two values: which one a browser would take is unclear, so neither passes.
        let mut two = headers(&[
            ("service-worker-allowed", "/x/"),
            ("service-worker-allowed", "/"),
        ]);
        response_headers(&mut two, &forwarding(), false);
        assert!(!two.contains_key("service-worker-allowed"));
        // Not UTF-8: not a path either.
        let mut binary = HeaderMap::new();
        binary.insert(
            "service-worker-allowed",
            HeaderValue::from_bytes(b"/\xff/").unwrap(),
        );
        response_headers(&mut binary, &forwarding(), false);
        assert!(!binary.contains_key("service-worker-allowed"));
        // Subdomain mode: the workspace's own origin, where its root is its own.
        let subdomain = Forwarding {
            prefix: "",
            ..forwarding()
        };
        let mut own_origin = headers(&[("service-worker-allowed", "/")]);
        response_headers(&mut own_origin, &subdomain, false);
        assert_eq!(values(&own_origin, "service-worker-allowed"), ["/"]);
    }

    #[test]
    fn the_session_cookie_never_reaches_the_workspace() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; guildnet_session=secret"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_session_cookie(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("guildnet_session=secret"),
        );
        strip_session_cookie(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
    static IDENTITY_HEADERS: [HeaderName; 2] = [
        HeaderName::from_static("x-auth-request-user"),
        HeaderName::from_static("x-auth-request-groups"),
    ];

    /// A path-mode request of a browser at 203.0.113.9 for `team/ide`, plain HTTP,
    /// authenticated by the session cookie.
    fn forwarding() -> Forwarding<'static> {
        Forwarding {
            origin: PublicOrigin {
                scheme: HeaderValue::from_static("https"),
                host: HeaderValue::from_static("guildnet.example.com"),
                forwarded_for: HeaderValue::from_static("203.0.113.9"),
            },
            prefix: "/w/team/ide",
            upstream: "10.244.0.7:8080".parse().unwrap(),
            websocket: None,
            trusted_proxy: false,
            forward_bearer: false,
            identity_headers: &[],
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn forwarded_headers_from_a_client_are_not_believed() {
        let sent = headers(&[
            ("host", "proxy:8090"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let origin = PublicOrigin::of(&sent, "198.51.100.7".parse().unwrap(), false, "http");
        assert_eq!(
            origin,
            PublicOrigin {
                scheme: HeaderValue::from_static("http"),
                host: HeaderValue::from_static("proxy:8090"),
                forwarded_for: HeaderValue::from_static("198.51.100.7"),
            }
        );
        let without_host =
            PublicOrigin::of(&HeaderMap::new(), "::1".parse().unwrap(), false, "https");
        assert_eq!(without_host.scheme, "https");
        assert_eq!(without_host.host, "");
        assert_eq!(without_host.forwarded_for, "::1");
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_extended() {
        let sent = headers(&[
            ("host", "proxy:8090"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "guildnet.example.com"),
        ]);
        let origin = PublicOrigin::of(&sent, "10.0.0.5".parse().unwrap(), true, "http");
        assert_eq!(
            origin,
            PublicOrigin {
                scheme: HeaderValue::from_static("https"),
                host: HeaderValue::from_static("guildnet.example.com"),
                forwarded_for: HeaderValue::from_static("203.0.113.9, 10.0.0.5"),
            }
        );
        // A trusted proxy that sends none of them: the proxy's own view.
        let bare = PublicOrigin::of(
            &headers(&[("host", "proxy:8090")]),
            "10.0.0.5".parse().unwrap(),
            true,
            "http",
        );
        assert_eq!(bare.scheme, "http");
        assert_eq!(bare.host, "proxy:8090");
        assert_eq!(bare.forwarded_for, "10.0.0.5");
    }

    #[test]
    fn the_workspace_is_told_the_public_origin() {
        let mut sent = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
        ]);
        request_headers(&mut sent, &forwarding());
        assert_eq!(values(&sent, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(values(&sent, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&sent, "x-forwarded-host"), ["guildnet.example.com"]);
    }

    #[test]
    fn forwarded_and_x_real_ip_are_believed_only_from_a_trusted_proxy() {
        let sent = || {
            headers(&[
                ("forwarded", "for=10.9.9.9;proto=https;host=evil.example"),
                ("forwarded", "for=10.8.8.8"),
                ("x-real-ip", "10.9.9.9"),
                ("x-kept", "1"),
            ])
        };
        let mut from_a_client = sent();
        request_headers(&mut from_a_client, &forwarding());
        assert!(!from_a_client.contains_key("forwarded"));
        assert!(!from_a_client.contains_key("x-real-ip"));
        assert_eq!(values(&from_a_client, "x-kept"), ["1"]);
        let mut from_a_trusted_proxy = sent();
        let trusted = Forwarding {
            trusted_proxy: true,
            ..forwarding()
        };
        request_headers(&mut from_a_trusted_proxy, &trusted);
        assert_eq!(
            values(&from_a_trusted_proxy, "forwarded"),
            ["for=10.9.9.9;proto=https;host=evil.example", "for=10.8.8.8"]
        );
        assert_eq!(values(&from_a_trusted_proxy, "x-real-ip"), ["10.9.9.9"]);
    }

    #[test]
    fn the_prefix_is_announced_and_cannot_be_forged_in_subdomain_mode() {
        let mut path_mode = headers(&[("x-forwarded-prefix", "/elsewhere")]);
        request_headers(&mut path_mode, &forwarding());
        assert_eq!(values(&path_mode, "x-forwarded-prefix"), ["/w/team/ide"]);
        let mut subdomain_mode = headers(&[("x-forwarded-prefix", "/elsewhere")]);
        let subdomain = Forwarding {
            prefix: "",
            ..forwarding()
        };
        request_headers(&mut subdomain_mode, &subdomain);
        assert!(!subdomain_mode.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn the_host_the_browser_used_is_kept() {
        let mut sent = headers(&[("host", "guildnet.example.com")]);
        request_headers(&mut sent, &forwarding());
        assert_eq!(values(&sent, "host"), ["guildnet.example.com"]);
    }

    #[test]
    fn the_session_cookie_is_removed_from_the_request() {
        let mut sent = headers(&[("cookie", "guildnet_session=secret; app=1")]);
        request_headers(&mut sent, &forwarding());
        assert_eq!(values(&sent, "cookie"), ["app=1"]);
    }

    #[test]
    fn no_bearer_token_reaches_the_workspace_without_forward_authorization() {
        // Logged in by session, with a bearer token besides: it still never passes.
        let mut sent = headers(&[
            ("authorization", "Bearer k8s-token"),
            ("authorization", "bearer"),
            ("authorization", "BEARER  other"),
            ("authorization", "Basic YTpi"),
        ]);
        request_headers(&mut sent, &forwarding());
        // The app's own Basic credentials stay.
        assert_eq!(values(&sent, "authorization"), ["Basic YTpi"]);
        let mut forwarded = headers(&[("authorization", "Bearer apps-own")]);
        let on = Forwarding {
            forward_bearer: true,
            ..forwarding()
        };
        request_headers(&mut forwarded, &on);
        assert_eq!(values(&forwarded, "authorization"), ["Bearer apps-own"]);
        // Not a bearer credential: a scheme that merely starts with the word.
        let mut other = headers(&[("authorization", "Bearerish x")]);
        request_headers(&mut other, &forwarding());
        assert_eq!(values(&other, "authorization"), ["Bearerish x"]);
    }

    #[test]
    fn forward_authorization_never_passes_a_kubernetes_token() {
        let apps_own = headers(&[("authorization", "Bearer apps-own")]);
        let kubernetes = |token: &str| token == "alices-k8s-token";
        assert!(!forwards_bearer_tokens(&apps_own, false, false, kubernetes));
        assert!(forwards_bearer_tokens(&apps_own, true, false, kubernetes));
        // The token that authenticated the request is the caller's Kubernetes credential.
        assert!(!forwards_bearer_tokens(&apps_own, true, true, kubernetes));
        let known = headers(&[
            ("authorization", "Bearer apps-own"),
            ("authorization", "Bearer alices-k8s-token"),
        ]);
        assert!(!forwards_bearer_tokens(&known, true, false, kubernetes));
    }

    #[test]
    fn identity_headers_are_removed() {
        let mut sent = headers(&[
            ("x-auth-request-user", "alice"),
            ("x-auth-request-groups", "admins"),
            ("x-kept", "1"),
        ]);
        let header_mode = Forwarding {
            identity_headers: &IDENTITY_HEADERS,
            ..forwarding()
        };
        request_headers(&mut sent, &header_mode);
        assert!(!sent.contains_key("x-auth-request-user"));
        assert!(!sent.contains_key("x-auth-request-groups"));
        assert!(sent.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed_from_the_request() {
        let mut sent = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
        ]);
        request_headers(&mut sent, &forwarding());
        for name in ["connection", "x-hop", "te", "upgrade"] {
            assert!(!sent.contains_key(name), "{name}");
        }
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let mut sent = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
        ]);
        let websocket = Forwarding {
            websocket: websocket_upgrade(&sent),
            ..forwarding()
        };
        request_headers(&mut sent, &websocket);
        assert_eq!(values(&sent, "connection"), ["upgrade"]);
        assert_eq!(values(&sent, "upgrade"), ["websocket"]);
        assert!(!sent.contains_key("keep-alive"));
    }

    #[test]
    fn websocket_handshakes_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            websocket_upgrade(&headers),
            Some(HeaderValue::from_static("websocket"))
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(websocket_upgrade(&headers), None);
        headers.remove(header::CONNECTION);
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(websocket_upgrade(&headers), None);
    }

    #[test]
    fn responses_move_under_the_prefix() {
        let mut answered = headers(&[
            ("location", "http://10.244.0.7:8080/login"),
            ("set-cookie", "a=1; Domain=10.244.0.7"),
            ("set-cookie", "b=2; Path=/api"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/html"),
        ]);
        response_headers(&mut answered, &forwarding(), false);
        assert_eq!(
            values(&answered, "location"),
            ["https://guildnet.example.com/w/team/ide/login"]
        );
        assert_eq!(
            values(&answered, "set-cookie"),
            [
                "a=1; Path=/w/team/ide/; Secure",
                "b=2; Path=/w/team/ide/api; Secure"
            ]
        );
        assert!(!answered.contains_key("transfer-encoding"));
        assert_eq!(values(&answered, "content-type"), ["text/html"]);
    }

    #[test]
    fn a_switched_websocket_keeps_its_upgrade() {
        let websocket = Forwarding {
            websocket: Some(HeaderValue::from_static("websocket")),
            ..forwarding()
        };
        let switching = || headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let mut switched = switching();
        response_headers(&mut switched, &websocket, true);
        assert_eq!(values(&switched, "connection"), ["upgrade"]);
        assert_eq!(values(&switched, "upgrade"), ["websocket"]);
        // The workspace answered the handshake without switching: nothing to upgrade.
        let mut refused = switching();
        response_headers(&mut refused, &websocket, false);
        assert!(!refused.contains_key("connection") && !refused.contains_key("upgrade"));
        let mut plain = switching();
        response_headers(&mut plain, &forwarding(), true);
        assert!(!plain.contains_key("upgrade"));
    }
}
