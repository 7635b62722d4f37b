//! Property tests over what browsers and clients send the proxy: request paths and hosts
//! (which workspace a request is for), forwarded headers, and session cookies. Whatever
//! arrives, nothing panics, a route names exactly one workspace, and no cookie is accepted
//! that the proxy did not sign. `make test` runs a few hundred cases per property;
//! `make fuzz` runs many more (`PROPTEST_CASES`).

use guildnet_proxy::auth::Identity;
use guildnet_proxy::forward::rewrite::PublicOrigin;
use guildnet_proxy::forward::route::{from_host, from_path};
use guildnet_proxy::session::SessionKeys;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

/// Paths shaped like workspace paths often (with dot segments, encodings and doubled
/// slashes), anything otherwise.
fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "/w/[a-z0-9.%-]{0,12}(/[a-z0-9.%-]{0,12}(/[a-zA-Z0-9./%?&=-]{0,24})?)?",
        "/[ -~]{0,40}",
    ]
}

proptest! {
    #[test]
    fn a_path_names_one_workspace_and_its_prefix(
        path in path_like(),
        query in proptest::option::of("[ -~]{0,16}"),
    ) {
        if let Ok(Some(target)) = from_path(&path, query.as_deref()) {
            prop_assert!(!target.namespace.is_empty() && !target.name.is_empty());
            prop_assert!(!target.namespace.contains('/') && !target.name.contains('/'));
            prop_assert_eq!(&target.prefix, &format!("/w/{}/{}", target.namespace, target.name));
            prop_assert!(path.starts_with(&target.prefix));
            let upstream = &target.upstream_path_and_query;
            prop_assert!(upstream.is_empty() || upstream.starts_with('/'));
            // Dot segments never reach a workspace.
            let path_part = upstream.split('?').next().unwrap_or_default();
            prop_assert!(!path_part.split('/').any(|s| s == ".."));
        }
    }

    #[test]
    fn a_host_names_at_most_one_workspace(label in "[a-z0-9-]{0,20}", path in path_like()) {
        let host = format!("{label}.ws.example.test");
        if let Ok(Some(target)) = from_host(&host, "ws.example.test", &path, None) {
            prop_assert_eq!(format!("{}--{}", target.name, target.namespace), label.clone());
            prop_assert_eq!(label.matches("--").count(), 1);
            prop_assert!(!target.name.contains("--") && !target.namespace.contains("--"));
        }
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
        trusted in any::<bool>(),
    ) {
        let names = [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "x-real-ip",
        ];
        let mut headers = HeaderMap::new();
        for (name, value) in names.iter().zip(values) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let origin = PublicOrigin::of(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), trusted, "http");
        if !trusted {
            prop_assert_eq!(origin.forwarded_for.to_str().unwrap(), "127.0.0.1");
            prop_assert_eq!(origin.scheme.to_str().unwrap(), "http");
        }
    }

    #[test]
    fn only_cookies_the_proxy_signed_are_sessions(
        forged in "[ -~]{0,120}",
        username in ".{0,40}",
        groups in prop::collection::vec(".{0,20}", 0..4),
    ) {
        let keys = SessionKeys::random(Duration::from_secs(3600));
        let now = SystemTime::now();
        prop_assert!(keys.verify(&forged, now).is_none());
        let identity = Identity::new(username, None, groups, BTreeMap::new());
        let cookie = keys.issue(&identity, now);
        prop_assert_eq!(keys.verify(&cookie, now), Some(identity));
        // Another proxy's key, or a tampered cookie, is refused.
        let other = SessionKeys::random(Duration::from_secs(3600));
        prop_assert!(other.verify(&cookie, now).is_none());
        let mut tampered = cookie.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        prop_assert!(keys.verify(&String::from_utf8(tampered).unwrap(), now).is_none());
    }
}
