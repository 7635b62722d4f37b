//! Who is calling: a session cookie, a bearer token checked by TokenReview, a trusted
//! front-proxy header, or the dev user, depending on `--auth`.
//!
//! TokenReview answers are remembered for `--auth-cache-ttl`, acceptances and refusals
//! apart (a flood of random tokens cannot push out the identities of real ones), and a token
//! with no remembered answer is reviewed only while its client (its address, or behind a
//! `--trusted-proxy` the address that proxy saw) is within `--token-review-rate`; beyond
//! that it is refused with `429` and `Retry-After`, and the API server is not asked.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use guildnet_api::policy::owner::owner_id;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};
use ipnet::IpNet;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::cache::{Verdict, Verdicts};
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::limits::{RateLimiter, retry_after_seconds};
use crate::session::{COOKIE_NAME, SessionKeys};

/// Refused tokens remembered at most, apart from the accepted ones (which refusals never
/// push out: anyone can send random tokens).
const MAX_REFUSED_TOKENS: usize = 10_000;

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
    /// For a session cookie, when a TokenReview established the identity (the login);
    /// None when it was established for this request (or within `--auth-cache-ttl`).
    pub checked_at: Option<SystemTime>,
}

/// Finds a request's caller the `--auth` way, reusing TokenReview answers for a while.
pub struct Authenticator {
    mode: AuthMode,
    /// Signs and checks session cookies (key from `--session-secret` or `--session-key-file`).
    pub sessions: SessionKeys,
    user_header: String,
    groups_header: String,
    /// Header mode's user and groups headers; empty in the other modes.
    identity_headers: Vec<HeaderName>,
    trusted_proxies: Vec<IpNet>,
    dev: Arc<Identity>,
    /// Who answers TokenReviews: the API server, or a stand-in in tests.
    reviewer: Arc<dyn TokenReviewer>,
    /// A session's identity is impersonated on writes only this long after its login
    /// (`--session-revalidate-after`).
    revalidate_after: Duration,
    /// sha256(token) → identity, or refused. Only hashes are kept.
    token_cache: Verdicts<[u8; 32], Arc<Identity>>,
    /// TokenReviews of tokens not in `token_cache`, per client address.
    reviews: RateLimiter,
    /// The tokens being reviewed now: requests that bring one of them wait for that review
    /// instead of asking (and counting against the rate limit) again.
    reviewing: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

/// Who answers TokenReviews: the API server ([`TokenReviews`]), or a stand-in for tests.
pub trait TokenReviewer: Send + Sync {
    /// Who `token` belongs to, None when it is not accepted; an error when the API server
    /// could not be asked (then nothing is remembered).
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Identity>>>;
}

/// Asks the API server: a TokenReview per token.
pub struct TokenReviews {
    client: kube::Client,
}

impl TokenReviews {
    /// TokenReviews made through `client` (the proxy's service account).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl TokenReviewer for TokenReviews {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_owned(),
                    ..TokenReviewSpec::default()
                },
                ..TokenReview::default()
            };
            let reviewed = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await?;
            Ok(reviewed.status.and_then(|status| {
                let user = status.user.filter(|_| status.authenticated == Some(true))?;
                Some(Identity::new(
                    user.username?,
                    user.uid.filter(|uid| !uid.is_empty()),
                    user.groups.unwrap_or_default(),
                    user.extra.unwrap_or_default(),
                ))
            }))
        })
    }
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
    /// TokenReviews of unknown tokens per second per client address
    /// (`--token-review-rate`, default 10; 0: unlimited).
    pub review_rate: f64,
    /// How many of those a client may make at once (`--token-review-burst`, default 20).
    pub review_burst: u32,
    /// How long after login a session's identity is trusted for writes
    /// (`--session-revalidate-after`, default 10m).
    pub revalidate_after: Duration,
}

impl Authenticator {
    /// An authenticator as `settings` say, asking TokenReviews through `client`.
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        Self::with_reviewer(Arc::new(TokenReviews::new(client)), settings)
    }

    /// An authenticator as `settings` say, asking `reviewer` who tokens belong to.
    pub fn with_reviewer(reviewer: Arc<dyn TokenReviewer>, settings: Settings) -> Self {
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
            reviewer,
            revalidate_after: settings.revalidate_after,
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
            token_cache: Verdicts::new(settings.cache_ttl, MAX_REFUSED_TOKENS),
            reviews: RateLimiter::new(settings.review_rate, settings.review_burst),
            reviewing: Mutex::default(),
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

    /// The caller of a request; 401 when it carries no valid credential, 429 when its
    /// bearer token is unknown and its client has asked too many TokenReviews lately.
    pub async fn require(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Caller, ApiError> {
        match self.mode {
            AuthMode::None => Ok(Caller {
                identity: self.dev.clone(),
                via: Via::DevUser,
                checked_at: None,
            }),
            AuthMode::Header => self
                .trusted_header_caller(headers, peer)
                .ok_or_else(ApiError::unauthenticated),
            AuthMode::Token => {
                if let Some(session) = session_cookie(headers)
                    .and_then(|value| self.sessions.verify_session(value, SystemTime::now()))
                {
                    return Ok(Caller {
                        identity: Arc::new(session.identity),
                        via: Via::Session,
                        checked_at: Some(session.checked_at),
                    });
                }
                let token = bearer_token(headers).ok_or_else(ApiError::unauthenticated)?;
                let client = self.client_address(headers, peer);
                let identity = self.review_token(token, client).await?;
                Ok(Caller {
                    identity,
                    via: Via::Bearer,
                    checked_at: None,
                })
            }
        }
    }

    /// The caller of a write, which the proxy makes impersonating their user name and
    /// groups: as [`Self::require`], but a session whose identity a TokenReview established
    /// more than `--session-revalidate-after` ago is refused with `401
    /// ReauthenticationRequired` (the dashboard then sends the browser to log in again).
    ///
    /// The cookie holds no token, and Kubernetes has no user directory to ask without one:
    /// an impersonated SelfSubjectReview only echoes the user and groups impersonated. Only a
    /// fresh TokenReview (a new login) can tell whether the user still exists and what their
    /// groups are now.
    pub async fn require_for_write(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Caller, ApiError> {
        let caller = self.require(headers, peer).await?;
        if let Some(checked_at) = caller.checked_at {
            let age = SystemTime::now()
                .duration_since(checked_at)
                .unwrap_or_default();
            if age > self.revalidate_after {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "ReauthenticationRequired",
                    format!(
                        "your login was checked {}s ago, more than the {}s changes are made on \
                         it: log in again at /login",
                        age.as_secs(),
                        self.revalidate_after.as_secs()
                    ),
                ));
            }
        }
        Ok(caller)
    }

    /// Whether a request with `headers` from `peer` authenticates, without asking the API
    /// server anything: a valid session cookie, a bearer token recently accepted, a trusted
    /// identity header, or `--auth=none`.
    pub fn is_known_caller(&self, headers: &HeaderMap, peer: IpAddr) -> bool {
        match self.mode {
            AuthMode::None => true,
            AuthMode::Header => self.trusted_header_caller(headers, peer).is_some(),
            AuthMode::Token => {
                session_cookie(headers)
                    .and_then(|value| self.sessions.verify(value, SystemTime::now()))
                    .is_some()
                    || bearer_token(headers).is_some_and(|token| self.knows_token(token))
            }
        }
    }

    /// Whether a TokenReview accepted `token` recently (its answer is still remembered).
    pub fn knows_token(&self, token: &str) -> bool {
        self.token_cache.is_accepted(&token_key(token))
    }

    /// The address a request comes from: `peer`, or behind `--trusted-proxy` front proxies
    /// the nearest address in `X-Forwarded-For` that is not one of them (the entries left of
    /// it could be anything the client wrote).
    pub fn client_address(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let mut nearest = peer;
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.into_iter().rev() {
            // An entry that is no address (`unknown`, a port) cannot be followed further.
            let Ok(address) = entry.trim().parse::<IpAddr>() else {
                break;
            };
            nearest = address;
            if !self.is_trusted_proxy(address) {
                break;
            }
        }
        nearest
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
            checked_at: None,
        })
    }

    /// Asks the API server who a token belongs to (TokenReview), reusing recent answers
    /// (acceptances and refusals apart). A token with no remembered answer costs `client` one
    /// of its TokenReviews (`--token-review-rate`); beyond them, 429 with `Retry-After`. 401
    /// when the token is not accepted or the API server could not be asked.
    pub async fn review_token(
        &self,
        token: &str,
        client: IpAddr,
    ) -> Result<Arc<Identity>, ApiError> {
        let key = token_key(token);
        if let Some(verdict) = self.remembered(&key) {
            return verdict;
        }
        // One review per token at a time: a client opening many connections with a new
        // token at once (a browser, wrk) waits for the first one's answer.
        let review = self
            .reviewing
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .clone();
        let _turn = review.lock().await;
        if let Some(verdict) = self.remembered(&key) {
            return verdict;
        }
        // Forgotten once answered, also when the request is dropped while it waits.
        let _forget = Reviewing {
            reviewing: &self.reviewing,
            key,
        };
        self.ask(token, key, client).await
    }

    /// What the cache says of the token hashed to `key`, if anything.
    fn remembered(&self, key: &[u8; 32]) -> Option<Result<Arc<Identity>, ApiError>> {
        match self.token_cache.get(key)? {
            Verdict::Accepted(identity) => Some(Ok(identity)),
            Verdict::Refused => Some(Err(ApiError::unauthenticated())),
        }
    }

    /// A TokenReview of `token` (hashed to `key`) for `client`, within its rate limit; the
    /// answer is remembered.
    async fn ask(
        &self,
        token: &str,
        key: [u8; 32],
        client: IpAddr,
    ) -> Result<Arc<Identity>, ApiError> {
        if let Err(wait) = self.reviews.take(client) {
            let seconds = retry_after_seconds(wait);
            tracing::debug!(%client, "TokenReview rate limit reached");
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyTokenReviews",
                format!(
                    "too many unrecognised tokens from {client}; try again in {seconds}s, or log \
                     in once and use the session cookie"
                ),
            );
            error.retry_after = Some(seconds);
            return Err(error);
        }
        match self.reviewer.review(token).await {
            Ok(Some(identity)) => {
                let identity = Arc::new(identity);
                self.token_cache.accept(key, identity.clone());
                Ok(identity)
            }
            Ok(None) => {
                self.token_cache.refuse(key);
                Err(ApiError::unauthenticated())
            }
            Err(error) => {
                // Not cached: the next request asks again.
                tracing::warn!(%error, "TokenReview failed");
                Err(ApiError::unauthenticated())
            }
        }
    }
}

/// A token under review: removed from the tokens being reviewed when dropped.
struct Reviewing<'a> {
    reviewing: &'a Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    key: [u8; 32],
}

impl Drop for Reviewing<'_> {
    fn drop(&mut self) {
        self.reviewing.lock().unwrap().remove(&self.key);
    }
}

/// Tests decide who a token belongs to without an API server: as if a TokenReview had.
#[cfg(test)]
impl Authenticator {
    pub(crate) fn remember_token(&self, token: &str, identity: Identity) {
        self.token_cache
            .accept(token_key(token), Arc::new(identity));
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

    /// TokenReviews answered here, no API server: `good` is alice's, any other token is
    /// refused; counted.
    #[derive(Default)]
    struct Reviews {
        asked: std::sync::atomic::AtomicUsize,
    }

    impl TokenReviewer for Reviews {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                Ok((token == "good")
                    .then(|| Identity::new("alice".into(), None, vec![], BTreeMap::new())))
            })
        }
    }

    fn authenticator(reviews: Arc<Reviews>, trusted_proxies: &[&str]) -> Authenticator {
        Authenticator::with_reviewer(
            reviews,
            Settings {
                mode: AuthMode::Token,
                sessions: SessionKeys::random(Duration::from_secs(60)),
                user_header: "x-user".into(),
                groups_header: "x-groups".into(),
                trusted_proxies: trusted_proxies.iter().map(|n| n.parse().unwrap()).collect(),
                dev_user: "dev".into(),
                dev_groups: vec![],
                cache_ttl: Duration::from_secs(60),
                review_rate: 0.0,
                review_burst: 1,
                revalidate_after: Duration::from_secs(600),
            },
        )
    }

    #[tokio::test]
    async fn refused_tokens_never_flush_accepted_identities() {
        let reviews = Arc::new(Reviews::default());
        let auth = authenticator(reviews.clone(), &[]);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            auth.review_token("good", client).await.unwrap().username,
            "alice"
        );
        // Far more refused tokens than either cache holds.
        for i in 0..25_000 {
            let refused = auth.review_token(&format!("random-{i}"), client).await;
            assert_eq!(refused.unwrap_err().status, StatusCode::UNAUTHORIZED);
        }
        let asked = reviews.asked.load(std::sync::atomic::Ordering::SeqCst);
        // Still remembered: no second review of alice's token.
        assert_eq!(
            auth.review_token("good", client).await.unwrap().username,
            "alice"
        );
        assert_eq!(
            reviews.asked.load(std::sync::atomic::Ordering::SeqCst),
            asked
        );
        assert!(auth.knows_token("good"));
        // A refusal is remembered too, apart.
        auth.review_token("random-24999", client).await.unwrap_err();
        assert_eq!(
            reviews.asked.load(std::sync::atomic::Ordering::SeqCst),
            asked
        );
    }

    /// A stand-in that answers after a pause, as the API server would.
    #[derive(Default)]
    struct SlowReviews(Reviews);

    impl TokenReviewer for SlowReviews {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.0.review(token).await
            })
        }
    }

    #[tokio::test]
    async fn many_connections_bringing_one_new_token_at_once_share_one_review() {
        let reviews = Arc::new(SlowReviews::default());
        let mut auth = authenticator(Arc::default(), &[]);
        auth.reviewer = reviews.clone();
        let auth = Arc::new(auth);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        // The rate limit allows one review (burst 1, no refill): 32 at once must share it.
        let requests: Vec<_> = (0..32)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.review_token("good", client).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap().username, "alice");
        }
        assert_eq!(reviews.0.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(auth.reviewing.lock().unwrap().is_empty());
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_nearest_untrusted_address() {
        let auth = authenticator(Arc::default(), &["10.0.0.0/8"]);
        let front: IpAddr = "10.0.0.1".parse().unwrap();
        let with = |chain: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static(chain));
            headers
        };
        let address = |s: &str| s.parse::<IpAddr>().unwrap();
        // Whatever the client wrote on the left is not believed.
        assert_eq!(
            auth.client_address(&with("1.2.3.4, 203.0.113.9, 10.0.0.2"), front),
            address("203.0.113.9")
        );
        assert_eq!(
            auth.client_address(&with("10.0.0.3"), front),
            address("10.0.0.3")
        );
        assert_eq!(
            auth.client_address(&with("unknown, 10.0.0.3"), front),
            address("10.0.0.3")
        );
        assert_eq!(auth.client_address(&HeaderMap::new(), front), front);
        // An untrusted peer's header is ignored.
        let peer = address("198.51.100.7");
        assert_eq!(auth.client_address(&with("203.0.113.9"), peer), peer);
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
