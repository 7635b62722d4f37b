//! The V1_0 handshake: the protocol magic, then SCRAM-SHA-256 (RFC 7677) in null-terminated
//! JSON messages. The client proves it knows the password without sending it, and checks
//! the server's signature, so a server that does not know the password is refused too.

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// `VersionDummy.Version.V1_0` of `ql2.proto`, sent little-endian first.
const V1_0: u32 = 0x34c2_bdc3;

/// The longest handshake message read: a server sends a few hundred bytes.
const MAX_MESSAGE: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Runs the handshake as `user` with `password` on a fresh connection.
pub async fn handshake<S>(stream: &mut S, user: &str, password: &str) -> Result<(), Error>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let scram = Scram::new(user, Alphanumeric.sample_string(&mut rand::rng(), 24));
    let mut first = V1_0.to_le_bytes().to_vec();
    first.extend(message(&json!({
        "protocol_version": 0,
        "authentication_method": "SCRAM-SHA-256",
        "authentication": scram.client_first(),
    })));
    stream.write_all(&first).await.map_err(lost)?;
    let hello: ServerMessage = read_message(stream).await?;
    hello.check()?;
    let server_first = read_message::<ServerMessage, _>(stream)
        .await?
        .authentication()?;
    let (client_final, expected_signature) = scram.client_final(password, &server_first)?;
    stream
        .write_all(&message(&json!({ "authentication": client_final })))
        .await
        .map_err(lost)?;
    let server_final = read_message::<ServerMessage, _>(stream)
        .await?
        .authentication()?;
    match server_final.strip_prefix("v=") {
        Some(signature) if signature == expected_signature => Ok(()),
        _ => Err(Error::AuthenticationFailed(
            "the server's signature does not prove it knows the password".into(),
        )),
    }
}

fn lost(error: std::io::Error) -> Error {
    Error::Lost(error.to_string())
}

fn message(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(0);
    bytes
}

async fn read_message<T, S>(stream: &mut S) -> Result<T, Error>
where
    T: for<'de> Deserialize<'de>,
    S: AsyncBufRead + Unpin,
{
    let mut bytes = Vec::new();
    let mut limited = (&mut *stream).take(MAX_MESSAGE as u64);
    limited.read_until(0, &mut bytes).await.map_err(lost)?;
    if bytes.pop() != Some(0) {
        return Err(Error::Lost(
            "the server closed the connection during the handshake".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Protocol(format!(
            "handshake message {:?}: {e}",
            String::from_utf8_lossy(&bytes)
        ))
    })
}

/// A server's handshake message.
#[derive(Deserialize)]
struct ServerMessage {
    success: bool,
    #[serde(default)]
    authentication: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_code: Option<i64>,
}

impl ServerMessage {
    fn check(&self) -> Result<(), Error> {
        if self.success {
            return Ok(());
        }
        let error = self.error.clone().unwrap_or_else(|| "refused".into());
        // Error codes 10 to 20 are authentication errors (the drivers' ReqlAuthError).
        match self.error_code {
            Some(10..=20) => Err(Error::AuthenticationFailed(error)),
            _ => Err(Error::Protocol(error)),
        }
    }

    fn authentication(self) -> Result<String, Error> {
        self.check()?;
        self.authentication
            .ok_or_else(|| Error::Protocol("a handshake message without authentication".into()))
    }
}

/// The client's side of one SCRAM-SHA-256 exchange.
struct Scram {
    first_bare: String,
    nonce: String,
}

impl Scram {
    fn new(user: &str, nonce: String) -> Self {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Self {
            first_bare: format!("n={user},r={nonce}"),
            nonce,
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client-final message for `server_first` and the server signature that must
    /// come back.
    fn client_final(&self, password: &str, server_first: &str) -> Result<(String, String), Error> {
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name))
                .ok_or_else(|| Error::Protocol(format!("SCRAM server-first without {name}")))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) {
            return Err(Error::Protocol(
                "SCRAM server nonce does not extend ours".into(),
            ));
        }
        let salt = BASE64
            .decode(field("s=")?.as_bytes())
            .map_err(|e| Error::Protocol(format!("SCRAM salt: {e}")))?;
        let iterations: u32 = field("i=")?
            .parse()
            .map_err(|e| Error::Protocol(format!("SCRAM iterations: {e}")))?;
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", BASE64.encode(&proof)),
            BASE64.encode(&server_signature),
        ))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil").
    #[test]
    fn the_proof_and_signature_are_rfc_7677s() {
        let scram = Scram::new("user", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (client_final, server_signature) = scram
            .client_final(
                "pencil",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            server_signature,
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let scram = Scram::new("admin", "abc".into());
        let refused = scram.client_final("", "r=xyz,s=AAAA,i=1");
        assert!(matches!(refused, Err(Error::Protocol(_))), "{refused:?}");
    }

    async fn against(server: &[u8]) -> Result<(), Error> {
        let (client, mut peer) = tokio::io::duplex(64 * 1024);
        peer.write_all(server).await.unwrap();
        let mut client = tokio::io::BufReader::new(client);
        handshake(&mut client, "admin", "secret").await
    }

    #[tokio::test]
    async fn an_authentication_error_code_is_an_authentication_failure() {
        let refused = against(
            b"{\"success\":true,\"min_protocol_version\":0,\"max_protocol_version\":0,\"server_version\":\"2.4.4\"}\0\
              {\"success\":false,\"error\":\"Unknown user\",\"error_code\":17}\0",
        )
        .await;
        assert!(
            matches!(&refused, Err(Error::AuthenticationFailed(m)) if m == "Unknown user"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_lost_not_a_protocol_error() {
        let (client, peer) = tokio::io::duplex(1024);
        drop(peer);
        let mut client = tokio::io::BufReader::new(client);
        let lost = handshake(&mut client, "admin", "").await;
        assert!(matches!(lost, Err(Error::Lost(_))), "{lost:?}");
    }
}
