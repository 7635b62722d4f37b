//! Session cookies: the identity a TokenReview established, signed so any replica holding
//! the same key can trust it without a store, and expiring on its own.
//!
//! The cookie value is `base64url(json) "." base64url(HMAC-SHA256(key, json))`. It holds no
//! token: a stolen cookie is worth one session, never the user's Kubernetes credential.
//!
//! Each session carries a random id. `POST /logout` revokes that id: at once on the replica
//! that served it, and through the session key Secret (data key `revoked`, a JSON map of id
//! to the session's expiry) for the others, which re-read it every
//! `--session-revocation-poll`. An entry leaves the map once its session would have expired
//! anyway, so the map holds at most the sessions logged out within one `--session-ttl`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::Identity;

/// The proxy's cookie. Never forwarded to a workspace.
pub const COOKIE_NAME: &str = "guildnet_session";
/// Shortest key accepted.
pub const MIN_KEY_BYTES: usize = 32;
/// The data key of the session key Secret.
const SECRET_KEY: &str = "key";
/// The data key of the session key Secret listing revoked sessions (id → expiry).
const SECRET_REVOKED: &str = "revoked";
/// Revoked sessions remembered at most; beyond it those expiring soonest are forgotten
/// first (about 60 bytes each: well within a Secret's 1 MiB).
pub const MAX_REVOKED: usize = 10_000;

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "u")]
    username: String,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(rename = "g", default)]
    groups: Vec<String>,
    #[serde(rename = "x", default, skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
    /// The session's random id, which logout revokes. Required: a cookie from before ids
    /// existed could not be revoked, so it is no session.
    #[serde(rename = "s")]
    id: String,
    /// When a TokenReview last established the identity, seconds since the epoch.
    #[serde(rename = "c")]
    checked: u64,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    expires: u64,
}

/// A session cookie the proxy signed, not expired and not revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who it is for, as a TokenReview said at login.
    pub identity: Identity,
    /// Its random id, which logout revokes.
    pub id: String,
    /// When a TokenReview established the identity (the login).
    pub checked_at: SystemTime,
    /// When it ends (`--session-ttl` after login).
    pub expires: SystemTime,
}

/// Revoked session ids, each with the expiry of its session (seconds since the epoch),
/// after which it need not be remembered.
#[derive(Default)]
pub struct Revocations {
    revoked: RwLock<BTreeMap<String, u64>>,
}

impl Revocations {
    /// Whether the session `id` was revoked.
    pub fn contains(&self, id: &str) -> bool {
        self.revoked
            .read()
            .expect("revocations lock poisoned")
            .contains_key(id)
    }

    /// How many revocations are remembered.
    pub fn len(&self) -> usize {
        self.revoked
            .read()
            .expect("revocations lock poisoned")
            .len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `revoked` (id → expiry) and forgets those expired at `now`.
    pub fn merge(&self, revoked: BTreeMap<String, u64>, now: SystemTime) {
        let mut map = self.revoked.write().expect("revocations lock poisoned");
        for (id, expires) in revoked {
            let entry = map.entry(id).or_insert(expires);
            *entry = (*entry).max(expires);
        }
        prune(&mut map, now);
    }
}

/// Forgets the revocations of sessions expired at `now`, then, beyond [`MAX_REVOKED`], those
/// expiring soonest.
fn prune(map: &mut BTreeMap<String, u64>, now: SystemTime) {
    let now = seconds(now);
    map.retain(|_, expires| *expires > now);
    if map.len() > MAX_REVOKED {
        let mut by_expiry: Vec<(u64, String)> = map
            .iter()
            .map(|(id, expires)| (*expires, id.clone()))
            .collect();
        by_expiry.sort();
        for (_, id) in by_expiry.into_iter().take(map.len() - MAX_REVOKED) {
            map.remove(&id);
        }
    }
}

/// Where revocations are shared between replicas: the session key Secret
/// ([`SecretRevocations`]), or a stand-in in tests.
pub trait RevocationStore: Send + Sync {
    /// Every revocation recorded (id → expiry, seconds since the epoch).
    fn load(&self) -> BoxFuture<'_, anyhow::Result<BTreeMap<String, u64>>>;
    /// Records that session `id`, which ends at `expires` (seconds since the epoch), is
    /// revoked, forgetting revocations expired at `now`.
    fn revoke(
        &self,
        id: String,
        expires: u64,
        now: SystemTime,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// Revocations kept in the session key Secret, data key `revoked`: read with `get`,
/// written with `update` (optimistic concurrency on its resourceVersion, retried on
/// conflict).
pub struct SecretRevocations {
    api: Api<Secret>,
    name: String,
}

impl SecretRevocations {
    /// The revocations in Secret `namespace/name`, through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }
}

fn revoked_of(secret: &Secret) -> BTreeMap<String, u64> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(SECRET_REVOKED))
        .and_then(|bytes| serde_json::from_slice(&bytes.0).ok())
        .unwrap_or_default()
}

impl RevocationStore for SecretRevocations {
    fn load(&self) -> BoxFuture<'_, anyhow::Result<BTreeMap<String, u64>>> {
        Box::pin(async move { Ok(revoked_of(&self.api.get(&self.name).await?)) })
    }

    fn revoke(
        &self,
        id: String,
        expires: u64,
        now: SystemTime,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            for _ in 0..5 {
                let mut secret = self.api.get(&self.name).await?;
                let mut revoked = revoked_of(&secret);
                revoked.insert(id.clone(), expires);
                prune(&mut revoked, now);
                secret.data.get_or_insert_with(BTreeMap::new).insert(
                    SECRET_REVOKED.to_owned(),
                    ByteString(serde_json::to_vec(&revoked)?),
                );
                // The resourceVersion read is sent back: a concurrent logout's write makes
                // this one conflict, and it is made again on top of that one.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &secret)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            anyhow::bail!("the session Secret {} keeps changing", self.name)
        })
    }
}

/// Why no session key could be had. The Kubernetes error is part of the message, which is
/// what the process prints when it cannot start, so it is not also a `source`.
#[derive(Debug, thiserror::Error)]
pub enum SessionKeyError {
    /// The key (`--session-key-file`) is shorter than 32 bytes.
    #[error(
        "the session key is {len} bytes; it needs at least {MIN_KEY_BYTES} (e.g. `head -c 32 /dev/urandom`)"
    )]
    TooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// The Secret cannot be read.
    #[error("reading the session key Secret {namespace}/{name}: {error}")]
    Read {
        /// The Secret's namespace (`--session-secret-namespace`).
        namespace: String,
        /// The Secret's name (`--session-secret`).
        name: String,
        /// The API server's error, e.g. Forbidden.
        error: kube::Error,
    },
    /// The Secret exists but holds no `key` of at least 32 bytes.
    #[error(
        "Secret {namespace}/{name} has no {SECRET_KEY:?} of at least {MIN_KEY_BYTES} bytes: \
         delete it and a new key is made"
    )]
    Unusable {
        /// The Secret's namespace (`--session-secret-namespace`).
        namespace: String,
        /// The Secret's name (`--session-secret`).
        name: String,
    },
    /// The Secret is missing and cannot be made.
    #[error("making the session key Secret {namespace}/{name}: {error}")]
    Create {
        /// The Secret's namespace (`--session-secret-namespace`).
        namespace: String,
        /// The Secret's name (`--session-secret`).
        name: String,
        /// The API server's error, e.g. Forbidden.
        error: kube::Error,
    },
    /// Three times the Secret was missing, yet making it conflicted with another replica's.
    #[error("the session key Secret {namespace}/{name} keeps changing")]
    KeepsChanging {
        /// The Secret's namespace (`--session-secret-namespace`).
        namespace: String,
        /// The Secret's name (`--session-secret`).
        name: String,
    },
}

/// The key that signs session cookies, how long a session lasts, and which were revoked.
pub struct SessionKeys {
    key: Vec<u8>,
    ttl: Duration,
    revoked: Revocations,
    /// Where revocations are shared with the other replicas; None: this process only.
    store: Option<Arc<dyn RevocationStore>>,
}

impl SessionKeys {
    /// Sessions signed with `key` (at least 32 bytes), lasting `ttl`.
    pub fn new(key: Vec<u8>, ttl: Duration) -> Result<Self, SessionKeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(SessionKeyError::TooShort { len: key.len() });
        }
        Ok(Self {
            key,
            ttl,
            revoked: Revocations::default(),
            store: None,
        })
    }

    /// A key of its own for this process: sessions end when it restarts.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            key: key.to_vec(),
            ttl,
            revoked: Revocations::default(),
            store: None,
        }
    }

    /// These sessions with revocations shared through `store`, so a logout on one replica
    /// ends the session on all of them.
    pub fn with_store(mut self, store: Arc<dyn RevocationStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The sessions revoked, as this process knows them.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// Revokes `session`: at once here, and in the shared store when there is one (an error
    /// when it could not be written there; it is still revoked here).
    pub async fn revoke(&self, session: &Session, now: SystemTime) -> anyhow::Result<()> {
        let expires = seconds(session.expires);
        self.revoked
            .merge(BTreeMap::from([(session.id.clone(), expires)]), now);
        match &self.store {
            Some(store) => store.revoke(session.id.clone(), expires, now).await,
            None => Ok(()),
        }
    }

    /// Reads the shared store's revocations into this process's (none without a store).
    pub async fn sync(&self, now: SystemTime) -> anyhow::Result<()> {
        if let Some(store) = &self.store {
            self.revoked.merge(store.load().await?, now);
        }
        Ok(())
    }

    /// Whether revocations are shared with other replicas.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// How long a session lasts from login (`--session-ttl`, default 8h).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// The cookie value for `identity`, valid for the session TTL from `now`.
    pub fn issue(&self, identity: &Identity, now: SystemTime) -> String {
        let payload = Payload {
            username: identity.username.clone(),
            uid: identity.uid.clone(),
            groups: identity.groups.clone(),
            extra: identity.extra.clone(),
            id: BASE64URL_NOPAD.encode(&rand::random::<[u8; 16]>()),
            checked: seconds(now),
            expires: seconds(now + self.ttl),
        };
        let json = serde_json::to_vec(&payload).expect("a payload always serialises");
        let mut mac = self.mac();
        mac.update(&json);
        let signature = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(&json),
            BASE64URL_NOPAD.encode(&signature)
        )
    }

    /// The identity in a cookie value, if it was signed with this key and has neither
    /// expired nor been revoked.
    pub fn verify(&self, value: &str, now: SystemTime) -> Option<Identity> {
        self.verify_session(value, now)
            .map(|session| session.identity)
    }

    /// The session in a cookie value, if it was signed with this key and has neither
    /// expired nor been revoked.
    pub fn verify_session(&self, value: &str, now: SystemTime) -> Option<Session> {
        let (body, signature) = value.split_once('.')?;
        let json = BASE64URL_NOPAD.decode(body.as_bytes()).ok()?;
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).ok()?;
        let mut mac = self.mac();
        mac.update(&json);
        // Constant-time comparison: a forger learns nothing from how long a refusal takes.
        mac.verify_slice(&signature).ok()?;
        let payload: Payload = serde_json::from_slice(&json).ok()?;
        if payload.expires <= seconds(now) || self.revoked.contains(&payload.id) {
            return None;
        }
        Some(Session {
            identity: Identity::new(payload.username, payload.uid, payload.groups, payload.extra),
            id: payload.id,
            checked_at: UNIX_EPOCH + Duration::from_secs(payload.checked),
            expires: UNIX_EPOCH + Duration::from_secs(payload.expires),
        })
    }
}

/// The session key kept in the Secret `namespace/name` (data key `key`), made on first use,
/// so every replica signs with the same key and sessions survive restarts. When two
/// replicas race to make it, the loser reads the winner's.
pub async fn key_from_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<u8>, SessionKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    for _ in 0..3 {
        let existing = match api.get_opt(&name).await {
            Ok(existing) => existing,
            Err(error) => {
                return Err(SessionKeyError::Read {
                    namespace,
                    name,
                    error,
                });
            }
        };
        if let Some(secret) = existing {
            return secret
                .data
                .and_then(|mut data| data.remove(SECRET_KEY))
                .map(|key| key.0)
                .filter(|key| key.len() >= MIN_KEY_BYTES)
                .ok_or(SessionKeyError::Unusable { namespace, name });
        }
        let key: [u8; 32] = rand::random();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                SECRET_KEY.to_owned(),
                ByteString(key.to_vec()),
            )])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(key.to_vec()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => {
                return Err(SessionKeyError::Create {
                    namespace,
                    name,
                    error,
                });
            }
        }
    }
    Err(SessionKeyError::KeepsChanging { namespace, name })
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::new(
            "alice".into(),
            Some("alice".into()),
            vec!["guildnet:users".into(), "system:authenticated".into()],
            BTreeMap::new(),
        )
    }

    fn keys() -> SessionKeys {
        SessionKeys::new(vec![7; 32], Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_session_round_trips_until_it_expires() {
        let now = SystemTime::now();
        let cookie = keys().issue(&alice(), now);
        assert_eq!(keys().verify(&cookie, now), Some(alice()));
        assert_eq!(
            keys().verify(&cookie, now + Duration::from_secs(3601)),
            None
        );
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let now = SystemTime::now();
        let cookie = keys().issue(&alice(), now);
        let (body, signature) = cookie.split_once('.').unwrap();
        let mut forged = serde_json::from_slice::<serde_json::Value>(
            &BASE64URL_NOPAD.decode(body.as_bytes()).unwrap(),
        )
        .unwrap();
        forged["u"] = "bob".into();
        let forged_body = BASE64URL_NOPAD.encode(&serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            keys().verify(&format!("{forged_body}.{signature}"), now),
            None
        );
        let other = SessionKeys::new(vec![8; 32], Duration::from_secs(3600)).unwrap();
        assert_eq!(other.verify(&cookie, now), None);
        for junk in ["", ".", "abc", "a.b", "%%%.%%%"] {
            assert_eq!(keys().verify(junk, now), None, "{junk:?}");
        }
    }

    #[tokio::test]
    async fn a_revoked_session_is_refused_and_forgotten_once_it_would_have_expired() {
        let now = SystemTime::now();
        let keys = keys();
        let cookie = keys.issue(&alice(), now);
        let other = keys.issue(&alice(), now);
        let session = keys.verify_session(&cookie, now).unwrap();
        assert_eq!(
            session.checked_at,
            UNIX_EPOCH + Duration::from_secs(seconds(now))
        );
        keys.revoke(&session, now).await.unwrap();
        assert_eq!(keys.verify(&cookie, now), None);
        assert_eq!(keys.verify(&other, now), Some(alice()));
        assert_eq!(keys.revocations().len(), 1);
        // Once the session would have ended anyway, its revocation is dropped.
        keys.revocations()
            .merge(BTreeMap::new(), now + Duration::from_secs(3601));
        assert!(keys.revocations().is_empty());
    }

    #[test]
    fn the_revocation_list_is_bounded() {
        let revoked = Revocations::default();
        let now = SystemTime::now();
        let base = seconds(now);
        revoked.merge(
            (0..MAX_REVOKED as u64 + 10)
                .map(|i| (format!("s{i}"), base + 100 + i))
                .collect(),
            now,
        );
        assert_eq!(revoked.len(), MAX_REVOKED);
        // Those expiring soonest went first.
        assert!(!revoked.contains("s0"));
        assert!(revoked.contains(&format!("s{}", MAX_REVOKED + 9)));
        revoked.merge(BTreeMap::from([("gone".to_owned(), base)]), now);
        assert!(!revoked.contains("gone"));
    }

    #[test]
    fn short_keys_are_refused_with_the_fix() {
        let err = SessionKeys::new(vec![1; 16], Duration::from_secs(1))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "the session key is 16 bytes; it needs at least 32 (e.g. `head -c 32 /dev/urandom`)"
        );
    }
}
