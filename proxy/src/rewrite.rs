//! Header rewrites that let an app written for `/` work under `/w/{ns}/{name}/`, and keep
//! the proxy's own credentials away from it.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::session::COOKIE_NAME;

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

/// Removes hop-by-hop headers, including those the Connection header names. `Upgrade` goes
/// too; the WebSocket path puts it back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub fn strip_session_cookie(headers: &mut HeaderMap) {
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
pub struct Origins<'a> {
    /// `/w/{ns}/{name}`, or empty in subdomain mode.
    pub prefix: &'a str,
    /// The Host the browser used (the proxy's).
    pub public_host: &'a str,
    /// `http` or `https`, as the browser sees the proxy.
    pub public_scheme: &'a str,
    /// `ip:port` the request went to.
    pub upstream_authority: &'a str,
}

/// A `Location` the browser can follow: absolute paths and URLs pointing at the workspace
/// (or at the proxy's host without the prefix) move under the prefix; relative references
/// and other sites are left alone, as are paths already under the prefix (apps honouring
/// `X-Forwarded-Prefix`).
pub fn rewrite_location(location: &str, o: &Origins<'_>) -> String {
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

/// A `Set-Cookie` scoped to the workspace: no `Domain` (the cookie belongs to the proxy's
/// origin), `Path` under the prefix (workspaces in path mode don't see each other's
/// cookies), and `Secure`.
pub fn rewrite_set_cookie(set_cookie: &str, prefix: &str) -> String {
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
}
