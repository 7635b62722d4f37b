//! The HTTPS server's TLS: a rustls configuration whose certificate is replaced in place, so
//! a renewed certificate (self-managed rotation, or cert-manager rewriting the mounted
//! files) is served from the next handshake on, without a restart or dropped connections.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Why a certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("the certificate PEM holds no certificate")]
    NoCertificate,
    /// The certificate or key PEM cannot be parsed, or holds no private key.
    #[error("cannot read the certificate or key PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refuses the key (unsupported algorithm, not matching the certificate) or the setup.
    #[error("cannot use the key or build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate resolver of the server: one certificate, replaceable while serving.
#[derive(Debug)]
pub struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    /// A resolver serving the certificate chain `cert_pem` with the key `key_pem`.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified_key(cert_pem, key_pem)?)),
        })
    }

    /// Serves `cert_pem` and `key_pem` from the next handshake on. On error the current
    /// certificate stays.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        let next = Arc::new(certified_key(cert_pem, key_pem)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The server configuration: TLS 1.2 and 1.3 with the ring provider (the one kube's client
/// uses, so one crypto library is linked), offering the application protocols `alpn`
/// (e.g. `h2`, `http/1.1`), certificates from `resolver`.
pub fn server_config(resolver: Arc<SwappableCert>, alpn: &[&[u8]]) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Keeps `resolver` serving the certificate and key in these files (a mounted Secret that
/// cert-manager renews): reads them every `interval` and swaps when they changed.
pub async fn follow_files(
    resolver: Arc<SwappableCert>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
) {
    let mut served: Option<(String, String)> = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let read = (
            tokio::fs::read_to_string(&cert).await,
            tokio::fs::read_to_string(&key).await,
        );
        let (Ok(cert_pem), Ok(key_pem)) = read else {
            tracing::warn!(cert = %cert.display(), key = %key.display(), "cannot read the TLS certificate files");
            continue;
        };
        if served
            .as_ref()
            .is_some_and(|(c, k)| *c == cert_pem && *k == key_pem)
        {
            continue;
        }
        match resolver.replace(&cert_pem, &key_pem) {
            Ok(()) => served = Some((cert_pem, key_pem)),
            Err(error) => tracing::warn!(%error, "keeping the current TLS certificate"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, Error> {
    let chain =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(host: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn serves_the_latest_certificate_and_keeps_the_old_one_on_error() {
        let (first_cert, first_key) = self_signed("first.example");
        let resolver = SwappableCert::new(&first_cert, &first_key).unwrap();
        let served = || resolver.current.read().unwrap().cert[0].clone();
        let first = served();
        let (second_cert, second_key) = self_signed("second.example");
        resolver.replace(&second_cert, &second_key).unwrap();
        let second = served();
        assert_ne!(first, second);
        assert!(resolver.replace("garbage", &second_key).is_err());
        assert!(
            resolver.replace(&first_cert, &second_key).is_err(),
            "key mismatch"
        );
        assert_eq!(served(), second);
        assert!(server_config(Arc::new(resolver), &[b"http/1.1"]).is_ok());
    }
}
