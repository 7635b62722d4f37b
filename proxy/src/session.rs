//! Session cookies: the identity a TokenReview established, signed so any replica holding
//! the same key can trust it without a store, and expiring on its own.
//!
//! The cookie value is `base64url(json) "." base64url(HMAC-SHA256(key, json))`. It holds no
//! token: a stolen cookie is worth one session, never the user's Kubernetes credential.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    expires: u64,
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

/// The key that signs session cookies, and how long a session lasts.
pub struct SessionKeys {
    key: Vec<u8>,
    ttl: Duration,
}

impl SessionKeys {
    /// Sessions signed with `key` (at least 32 bytes), lasting `ttl`.
    pub fn new(key: Vec<u8>, ttl: Duration) -> Result<Self, SessionKeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(SessionKeyError::TooShort { len: key.len() });
        }
        Ok(Self { key, ttl })
    }

    /// A key of its own for this process: sessions end when it restarts.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            key: key.to_vec(),
            ttl,
        }
    }

    /// How long a session lasts from login (`--session-ttl`, default 12h).
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

    /// The identity in a cookie value, if it was signed with this key and has not expired.
    pub fn verify(&self, value: &str, now: SystemTime) -> Option<Identity> {
        let (body, signature) = value.split_once('.')?;
        let json = BASE64URL_NOPAD.decode(body.as_bytes()).ok()?;
        let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).ok()?;
        let mut mac = self.mac();
        mac.update(&json);
        // Constant-time comparison: a forger learns nothing from how long a refusal takes.
        mac.verify_slice(&signature).ok()?;
        let payload: Payload = serde_json::from_slice(&json).ok()?;
        (payload.expires > seconds(now))
            .then(|| Identity::new(payload.username, payload.uid, payload.groups, payload.extra))
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
