//! Who is calling: a session cookie, a bearer token checked by TokenReview, a trusted
//! front-proxy header, or the dev user, depending on `--auth`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use guildnet_api::policy::owner::owner_id;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::cache::TtlCache;
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::session::{COOKIE_NAME, SessionKeys};

/// An authenticated user, as the API server knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name, e.g. `alice` or `system:serviceaccount:team:ci`.
    pub username: String,
    /// The user's uid, when TokenReview gave one.
    pub uid: Option<String>,
    /// The user's groups, which RBAC decisions and impersonated writes use.
    pub groups: Vec<String>,
    /// TokenReview's extra attributes (e.g. scopes), sent on in SubjectAccessReviews.
    pub extra: BTreeMap<String, Vec<String>>,
    /// The owner id, computed once (a hash) rather than on every request.
    owner: String,
}

impl Identity {
    /// The identity of `username`, with its owner id computed here once.
    pub fn new(
        username: String,
        uid: Option<String>,
        groups: Vec<String>,
        extra: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            owner: owner_id(&username),
            username,
            uid,
            groups,
            extra,
        }
    }

    /// The `guildnet.io/owner` label value of this user's workspaces (what the webhook sets).
    pub fn owner_id(&self) -> &str {
        &self.owner
    }
}

/// How the caller authenticated; decides what they may do besides reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The proxy's session cookie, issued by `/login` (`--auth=token`).
    Session,
    /// An `Authorization: Bearer` token checked by TokenReview; writes need no Origin check.
    Bearer,
    /// The identity header from a `--trusted-proxy` source (`--auth=header`).
    TrustedHeader,
    /// No proof: everyone is `--dev-user` (`--auth=none`).
    DevUser,
}

/// The caller of a request: who, and how they proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user, as the API server knows them.
    pub identity: Arc<Identity>,
    /// How they authenticated; bearer-token callers skip the Origin check on writes.
    pub via: Via,
}

/// Finds a request's caller the `--auth` way, reusing TokenReview answers for a while.
pub struct Authenticator {
    mode: AuthMode,
    client: kube::Client,
    /// Signs and checks session cookies (key from `--session-secret` or `--session-key-file`).
    pub sessions: SessionKeys,
    user_header: String,
    groups_header: String,
    /// Header mode's user and groups headers; empty in the other modes.
    identity_headers: Vec<HeaderName>,
    trusted_proxies: Vec<IpNet>,
    dev: Arc<Identity>,
    /// sha256(token) → identity, or None for a refused token. Only hashes are kept.
    token_cache: TtlCache<[u8; 32], Option<Arc<Identity>>>,
}

/// What an [`Authenticator`] is made from: the authentication flags.
pub struct Settings {
    /// How callers authenticate (`--auth`, default token).
    pub mode: AuthMode,
    /// Signs and checks session cookies.
    pub sessions: SessionKeys,
    /// Header mode: the user name header (`--user-header`, default `X-Auth-Request-User`).
    pub user_header: String,
    /// Header mode: the comma-separated groups header (`--groups-header`).
    pub groups_header: String,
    /// Sources whose identity and X-Forwarded-* headers are believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<IpNet>,
    /// Auth mode none: the user everyone is (`--dev-user`, default `developer`).
    pub dev_user: String,
    /// Auth mode none: the groups everyone has (`--dev-groups`).
    pub dev_groups: Vec<String>,
    /// How long a TokenReview answer is reused (`--auth-cache-ttl`, default 10s).
    pub cache_ttl: Duration,
}

impl Authenticator {
    /// An authenticator as `settings` say, asking TokenReviews through `client`.
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        let identity_headers = if settings.mode == AuthMode::Header {
            [&settings.user_header, &settings.groups_header]
                .into_iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            identity_headers,
            mode: settings.mode,
            client,
            sessions: settings.sessions,
            user_header: settings.user_header,
            groups_header: settings.groups_header,
            trusted_proxies: settings.trusted_proxies,
            dev: Arc::new(Identity::new(
                settings.dev_user,
                None,
                settings.dev_groups,
                BTreeMap::new(),
            )),
            token_cache: TtlCache::new(settings.cache_ttl),
        }
    }

    /// The `--auth` mode in force.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Headers that carry identity to the proxy; a workspace never sees them.
    pub fn identity_headers(&self) -> &[HeaderName] {
        &self.identity_headers
    }

    /// Whether `peer` is a configured front proxy, whose headers are believed.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        trusted(&self.trusted_proxies, peer)
    }

    /// The caller of a request, or None when it carries no valid credential.
    pub async fn authenticate(&self, headers: &HeaderMap, peer: IpAddr) -> Option<Caller> {
        match self.mode {
            AuthMode::None => Some(Caller {
                identity: self.dev.clone(),
                via: Via::DevUser,
            }),
            AuthMode::Header => self.trusted_header_caller(headers, peer),
            AuthMode::Token => {
                if let Some(identity) = session_cookie(headers)
                    .and_then(|value| self.sessions.verify(value, SystemTime::now()))
                    .map(Arc::new)
                {
                    return Some(Caller {
                        identity,
                        via: Via::Session,
                    });
                }
                let token = bearer_token(headers)?;
                self.review_token(token).await.map(|identity| Caller {
                    identity,
                    via: Via::Bearer,
                })
            }
        }
    }

    /// The caller of a request, or the 401 that says how to log in.
    pub async fn require(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Caller, ApiError> {
        self.authenticate(headers, peer)
            .await
            .ok_or_else(ApiError::unauthenticated)
    }

    fn trusted_header_caller(&self, headers: &HeaderMap, peer: IpAddr) -> Option<Caller> {
        if !self.is_trusted_proxy(peer) {
            return None;
        }
        let username = headers.get(&self.user_header)?.to_str().ok()?.trim();
        if username.is_empty() {
            return None;
        }
        let mut groups: Vec<String> = headers
            .get_all(&self.groups_header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        groups.push("system:authenticated".to_owned());
        Some(Caller {
            identity: Arc::new(Identity::new(
                username.to_owned(),
                None,
                groups,
                BTreeMap::new(),
            )),
            via: Via::TrustedHeader,
        })
    }

    /// Asks the API server who a token belongs to (TokenReview), reusing recent answers.
    pub async fn review_token(&self, token: &str) -> Option<Arc<Identity>> {
        let key = token_key(token);
        if let Some(answer) = self.token_cache.get(&key) {
            return answer;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let answer = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(reviewed) => reviewed.status.and_then(|status| {
                let user = status.user.filter(|_| status.authenticated == Some(true))?;
                Some(Arc::new(Identity::new(
                    user.username?,
                    user.uid.filter(|uid| !uid.is_empty()),
                    user.groups.unwrap_or_default(),
                    user.extra.unwrap_or_default(),
                )))
            }),
            Err(error) => {
                // Not cached: the next request asks again.
                tracing::warn!(%error, "TokenReview failed");
                return None;
            }
        };
        self.token_cache.insert(key, answer.clone());
        answer
    }
}

/// Tests decide who a token belongs to without an API server: as if a TokenReview had.
#[cfg(test)]
impl Authenticator {
    pub(crate) fn remember_token(&self, token: &str, identity: Identity) {
        self.token_cache
            .insert(token_key(token), Some(Arc::new(identity)));
    }
}

/// The token cache's key: a hash, so the cache holds no token.
fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `peer` is in one of `proxies`; IPv4-mapped IPv6 addresses count as IPv4.
pub fn trusted(proxies: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&peer))
}

/// The bearer token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of the proxy's session cookie, if the request carries it.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; guildnet_session=s.x"),
        );
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(session_cookie(&headers), Some("s.x"));
        let mut other = HeaderMap::new();
        other.insert(COOKIE, HeaderValue::from_static("guildnet_session_evil=1"));
        assert_eq!(session_cookie(&other), None);
    }

    #[test]
    fn only_configured_sources_are_trusted() {
        let nets: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        assert!(trusted(&nets, "10.1.2.3".parse().unwrap()));
        assert!(trusted(&nets, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!trusted(&nets, "127.0.0.2".parse().unwrap()));
        assert!(!trusted(&nets, "192.168.0.1".parse().unwrap()));
        assert!(!trusted(&[], "127.0.0.1".parse().unwrap()));
    }
}
