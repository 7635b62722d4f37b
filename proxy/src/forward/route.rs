//! Which workspace a request is for: `/w/{namespace}/{name}/{rest}` (path mode) or the host
//! `<name>--<namespace>.<base domain>` (subdomain mode).
//!
//! Names and namespaces may contain `--` themselves, so a host label is read only when it
//! has exactly one `--`: `a--b--c` could be `a--b` in `c` or `a` in `b--c`, and two
//! workspaces must never share a host (an origin). Such workspaces are served in path mode
//! only.

use guildnet_api::workspace::facts::{PROXY_PATH_PREFIX, proxy_path};
use percent_encoding::percent_decode_str;

/// A request's workspace and what is left of its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// From the path's first segment, or the host's label after its `--`.
    pub namespace: String,
    /// From the path's second segment, or the host's label before its `--`.
    pub name: String,
    /// The path the workspace sees, starting with `/`, with the query if any; empty for a
    /// bare `/w/ns/name`, with or without a query, which callers redirect to `…/`.
    pub upstream_path_and_query: String,
    /// `/w/{namespace}/{name}` in path mode; empty in subdomain mode.
    pub prefix: String,
}

/// Why a workspace path or host is refused: answered with 400 Bad Request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A `.` or `..` segment, also percent-encoded, that could climb out of the workspace.
    #[error("dot segments (`.`, `..`) are not allowed in workspace paths")]
    DotSegment,
    /// Not `/w/<namespace>/<name>/…`, or a host without `--` between name and namespace.
    #[error("the path must be /w/<namespace>/<name>/…")]
    Malformed,
    /// A namespace or name that is not an RFC 1123 label.
    #[error("{0:?} is not a valid namespace or workspace name")]
    InvalidName(String),
    /// A host label with more than one `--`, which more than one workspace could claim.
    #[error(
        "the host label {0:?} has more than one `--`, so it could name more than one workspace \
         (`<name>--<namespace>`); open a workspace whose name or namespace contains `--` at \
         /w/<namespace>/<name>/ instead"
    )]
    AmbiguousHost(String),
}

/// The workspace of a path-mode request (`path` as received, `query` without `?`). A bare
/// `/w/ns/name` (no trailing slash) gives an empty rest, with or without a query; callers
/// redirect it to `…/`, keeping the request's query, so relative links resolve inside the
/// prefix.
pub fn from_path(path: &str, query: Option<&str>) -> Result<Option<Target>, RouteError> {
    let Some(after) = path.strip_prefix(PROXY_PATH_PREFIX) else {
        return Ok(None);
    };
    reject_dot_segments(path)?;
    let mut parts = after.splitn(3, '/');
    let namespace = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(RouteError::Malformed)?;
    let name = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or(RouteError::Malformed)?;
    for label in [namespace, name] {
        if !is_dns_label(label) {
            return Err(RouteError::InvalidName(label.to_owned()));
        }
    }
    let upstream_path_and_query = match parts.next() {
        Some(rest) => with_query(format!("/{rest}"), query),
        // Nothing after the name: no path for the workspace, only the redirect, whose
        // query the caller takes from the request.
        None => String::new(),
    };
    // The prefix is the workspace's proxy path without its trailing slash.
    let mut prefix = proxy_path(namespace, name);
    prefix.pop();
    Ok(Some(Target {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        upstream_path_and_query,
        prefix,
    }))
}

/// The workspace of a subdomain-mode request: `host` (without port) is
/// `<name>--<namespace>.<base_domain>` with exactly one `--` in the label (overlapping ones,
/// as in `a---b`, count twice).
pub fn from_host(
    host: &str,
    base_domain: &str,
    path: &str,
    query: Option<&str>,
) -> Result<Option<Target>, RouteError> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let base = base_domain.trim_matches('.').to_ascii_lowercase();
    let Some(label) = host
        .strip_suffix(&base)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Ok(None);
    };
    let split = label.find("--").ok_or(RouteError::Malformed)?;
    if label.rfind("--") != Some(split) {
        return Err(RouteError::AmbiguousHost(label.to_owned()));
    }
    let (name, namespace) = (&label[..split], &label[split + 2..]);
    for part in [namespace, name] {
        if !is_dns_label(part) {
            return Err(RouteError::InvalidName(part.to_owned()));
        }
    }
    reject_dot_segments(path)?;
    Ok(Some(Target {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        upstream_path_and_query: with_query(path.to_owned(), query),
        prefix: String::new(),
    }))
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// `.` and `..` segments, also percent-encoded (`%2e%2e`), would let a path climb out of
/// its workspace at whatever normalises it next; browsers never send them.
fn reject_dot_segments(path: &str) -> Result<(), RouteError> {
    let dotted = path.split('/').any(|segment| {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".." || decoded.contains('/') && decoded.contains("..")
    });
    if dotted {
        Err(RouteError::DotSegment)
    } else {
        Ok(())
    }
}

/// RFC 1123 label: what a namespace and a workspace name are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ns: &str, name: &str, rest: &str, prefix: &str) -> Option<Target> {
        Some(Target {
            namespace: ns.into(),
            name: name.into(),
            upstream_path_and_query: rest.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn paths_name_the_workspace_and_the_rest() {
        let cases = [
            (
                "/w/team/ide/",
                None,
                target("team", "ide", "/", "/w/team/ide"),
            ),
            (
                "/w/team/ide",
                None,
                target("team", "ide", "", "/w/team/ide"),
            ),
            (
                "/w/team/ide/a/b%20c",
                Some("x=1&y"),
                target("team", "ide", "/a/b%20c?x=1&y", "/w/team/ide"),
            ),
            (
                "/w/team/ide//double",
                None,
                target("team", "ide", "//double", "/w/team/ide"),
            ),
            ("/api/workspaces", None, None),
            ("/", None, None),
        ];
        for (path, query, want) in cases {
            assert_eq!(from_path(path, query), Ok(want), "{path}");
        }
    }

    #[test]
    fn a_bare_workspace_path_has_no_rest_with_or_without_a_query() {
        for query in [None, Some("x=1"), Some("")] {
            assert_eq!(
                from_path("/w/team/ide", query),
                Ok(target("team", "ide", "", "/w/team/ide")),
                "{query:?}"
            );
        }
        // With the slash there is a rest, and the query goes with it.
        assert_eq!(
            from_path("/w/team/ide/", Some("x=1")),
            Ok(target("team", "ide", "/?x=1", "/w/team/ide"))
        );
    }

    #[test]
    fn traversal_and_bad_names_are_refused() {
        for path in [
            "/w/a/b/../../c/d",
            "/w/a/b/..",
            "/w/a/b/./x",
            "/w/a/b/%2e%2e/x",
            "/w/a/b/%2E%2e%2Fx",
            "/w/../kube-system/x/",
        ] {
            assert_eq!(from_path(path, None), Err(RouteError::DotSegment), "{path}");
        }
        assert_eq!(from_path("/w/", None), Err(RouteError::Malformed));
        assert_eq!(from_path("/w/ns", None), Err(RouteError::Malformed));
        assert_eq!(from_path("/w/ns/", None), Err(RouteError::Malformed));
        for path in ["/w/NS/ide/", "/w/ns/i%2fde/", "/w/ns/-ide/", "/w/ns/ide_1/"] {
            assert!(
                matches!(from_path(path, None), Err(RouteError::InvalidName(_))),
                "{path}"
            );
        }
        // Not a dot segment: dots inside a name are the app's business.
        assert!(from_path("/w/a/b/file..txt", None).unwrap().is_some());
    }

    #[test]
    fn hosts_name_the_workspace_in_subdomain_mode() {
        assert_eq!(
            from_host(
                "ide--team.ws.example.com",
                "ws.example.com",
                "/x",
                Some("a=1")
            ),
            Ok(target("team", "ide", "/x?a=1", ""))
        );
        assert_eq!(
            from_host("My-Ide--team.WS.example.com.", "ws.example.com", "/", None),
            Ok(target("team", "my-ide", "/", ""))
        );
        assert_eq!(
            from_host("ws.example.com", "ws.example.com", "/", None),
            Ok(None)
        );
        assert_eq!(
            from_host("evilws.example.com", "ws.example.com", "/", None),
            Ok(None)
        );
        assert_eq!(
            from_host("ide.ws.example.com", "ws.example.com", "/", None),
            Err(RouteError::Malformed)
        );
        assert_eq!(
            from_host("ide--team.ws.example.com", "ws.example.com", "/../x", None),
            Err(RouteError::DotSegment)
        );
    }

    #[test]
    fn a_host_names_at_most_one_workspace() {
        // `a--b` in `c`, or `a` in `b--c`: both would be this host, so it is neither.
        for label in ["a--b--c", "my--ide--team", "a---b", "a----b", "ide--team--"] {
            assert_eq!(
                from_host(
                    &format!("{label}.ws.example.com"),
                    "ws.example.com",
                    "/",
                    None
                ),
                Err(RouteError::AmbiguousHost(label.to_owned())),
                "{label}"
            );
        }
        // One `--`: one reading, whichever side a single `-` is on.
        assert_eq!(
            from_host("a-b--c-d.ws.example.com", "ws.example.com", "/", None),
            Ok(target("c-d", "a-b", "/", ""))
        );
        assert_eq!(
            from_host("--team.ws.example.com", "ws.example.com", "/", None),
            Err(RouteError::InvalidName(String::new()))
        );
    }
}
