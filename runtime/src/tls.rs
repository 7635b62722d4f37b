//! The HTTPS server's TLS: a rustls configuration whose certificate is replaced in place, so
//! a renewed certificate (self-managed rotation, or cert-manager rewriting the mounted
//! files) is served from the next handshake on, without a restart or dropped connections.

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
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
    /// The client CA cannot verify client certificates.
    #[error("cannot verify client certificates with the given CA: {0}")]
    ClientVerifier(String),
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
    server_config_for_clients(resolver, alpn, None)
}

/// Like [`server_config`], but with `clients` set, only clients presenting a certificate
/// that `clients` accepts complete the handshake (see [`client_verifier`]).
pub fn server_config_for_clients(
    resolver: Arc<SwappableCert>,
    alpn: &[&[u8]],
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
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

/// Accepts client certificates signed by a CA of `ca_pem` (and for client authentication),
/// refusing clients without one.
pub fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    if roots.is_empty() {
        return Err(Error::NoCertificate);
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::ClientVerifier(e.to_string()))
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

    /// A CA, and a client certificate it signs, as PEM.
    fn ca_and_client() -> (String, rustls::pki_types::CertificateDer<'static>) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut client = CertificateParams::new(Vec::new()).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        (ca_cert.pem(), client_cert.der().clone())
    }

    #[test]
    fn only_clients_of_the_given_ca_are_accepted() {
        let (ca, client) = ca_and_client();
        let (_, stranger) = ca_and_client();
        let verifier = client_verifier(&ca).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        assert!(verifier.verify_client_cert(&client, &[], now).is_ok());
        assert!(verifier.verify_client_cert(&stranger, &[], now).is_err());
        assert!(
            verifier.client_auth_mandatory(),
            "no certificate, no handshake"
        );
        assert!(matches!(
            client_verifier("no PEM here"),
            Err(Error::NoCertificate)
        ));
    }
}
