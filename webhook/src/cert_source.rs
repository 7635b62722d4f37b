//! Where the serving certificate comes from, and keeping it, and the CA bundle the webhook
//! configurations trust, current while serving.
//!
//! - Files (`--tls-cert-file`, `--tls-key-file`, optionally `--ca-file`): typically a Secret
//!   that cert-manager renews, mounted into the pod; re-read periodically, since the kubelet
//!   updates mounted Secrets in place.
//! - Self-managed: a CA and serving certificate generated here ([`certs`]) and kept in a
//!   Secret that every replica shares, so replicas serve certificates of the same CA. A
//!   replica that renews writes the Secret with its resourceVersion; losing that race to
//!   another replica just means reading the winner's certificates.

use crate::caches::Caches;
use crate::certs::{self, Bundle, Lifetimes};
use crate::registration::Registration;
use guildnet_runtime::tls::SwappableCert;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

/// The Secret keys of a self-managed bundle; `tls.crt` and `tls.key` make it a valid
/// `kubernetes.io/tls` Secret.
const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
const TLS_CERT_KEY: &str = "tls.crt";
const TLS_KEY_KEY: &str = "tls.key";
/// How often mounted certificate files are re-read.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds of the self-managed check interval (a quarter of `--cert-renew-before`).
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Attempts to settle the Secret when replicas renew it at the same time.
const WRITE_ATTEMPTS: usize = 3;

/// A serving certificate, its key, and the CA bundle to register (when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The serving certificate chain, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
    /// The CA certificates (PEM) the API server should trust, for the configurations'
    /// `caBundle`; `None` for files without `--ca-file`.
    pub ca_bundle: Option<String>,
}

/// Why certificates cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mounted certificate, key or CA file cannot be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file, from `--tls-cert-file`, `--tls-key-file` or `--ca-file`.
        path: PathBuf,
        /// Why it cannot be read, e.g. not found or permission denied.
        source: std::io::Error,
    },
    /// The self-managed certificate Secret cannot be read, created or replaced.
    #[error("Secret {secret}: {source}")]
    Kube {
        /// The Secret's name (`--tls-secret-name`).
        secret: String,
        /// The API server's error, e.g. Forbidden.
        source: kube::Error,
    },
    /// A self-managed certificate cannot be generated, or a stored one parsed.
    #[error(transparent)]
    Certs(#[from] certs::Error),
    /// The named Secret lost every write race to other replicas; the next check tries again.
    #[error("Secret {0} kept changing while it was renewed; retrying at the next check")]
    Contended(String),
}

/// Where certificates come from.
pub enum Source {
    /// Mounted files.
    Files {
        /// The certificate chain's file (`--tls-cert-file`).
        cert: PathBuf,
        /// The private key's file (`--tls-key-file`).
        key: PathBuf,
        /// The CA bundle's file (`--ca-file`), if given.
        ca: Option<PathBuf>,
    },
    /// Generated here and stored in a Secret.
    SelfManaged(Box<SecretStore>),
}

impl Source {
    /// The current certificates; for a self-managed source, renewed first when due.
    pub async fn fetch(&self) -> Result<Material, Error> {
        match self {
            Self::Files { cert, key, ca } => {
                let ca_bundle = match ca {
                    Some(ca) => Some(read(ca).await?),
                    None => None,
                };
                Ok(Material {
                    cert: read(cert).await?,
                    key: read(key).await?,
                    ca_bundle,
                })
            }
            Self::SelfManaged(store) => store.fetch().await,
        }
    }

    /// How often to look for new certificates: often enough that a renewal is picked up
    /// long before the old certificate expires.
    pub fn check_interval(&self) -> Duration {
        match self {
            Self::Files { .. } => FILE_CHECK_INTERVAL,
            Self::SelfManaged(store) => (store.lifetimes.cert_renew_before / 4)
                .clamp(MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL),
        }
    }
}

async fn read(path: &PathBuf) -> Result<String, Error> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| Error::File {
            path: path.clone(),
            source,
        })
}

/// The Secret of a self-managed CA and serving certificate.
pub struct SecretStore {
    /// Secrets of the Secret's namespace.
    pub api: Api<Secret>,
    /// The Secret's name.
    pub name: String,
    /// The hosts the serving certificate must name.
    pub hosts: Vec<String>,
    /// Validity and renewal of the certificates.
    pub lifetimes: Lifetimes,
}

impl SecretStore {
    async fn fetch(&self) -> Result<Material, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let stored = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.error(e))?;
            let current = stored.as_ref().and_then(bundle_of);
            let now = SystemTime::now();
            let next = certs::renew(current.as_ref(), &self.hosts, now, &self.lifetimes)?;
            if current.as_ref() == Some(&next) {
                return Ok(material(&next));
            }
            match self.write(stored, &next).await {
                Ok(()) => {
                    info!(secret = %self.name, "stored a renewed webhook certificate");
                    return Ok(material(&next));
                }
                // Another replica wrote first: read what it stored.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(self.error(error)),
            }
        }
        Err(Error::Contended(self.name.clone()))
    }

    /// Creates the Secret, or replaces it at the resourceVersion it was read at.
    async fn write(&self, stored: Option<Secret>, bundle: &Bundle) -> Result<(), kube::Error> {
        let params = PostParams::default();
        match stored {
            Some(mut secret) => {
                secret.data = Some(data_of(bundle));
                secret.string_data = None;
                self.api.replace(&self.name, &params, &secret).await?;
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "guildnet-webhook".to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some(data_of(bundle)),
                    ..Secret::default()
                };
                self.api.create(&params, &secret).await?;
            }
        }
        Ok(())
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Kube {
            secret: self.name.clone(),
            source,
        }
    }
}

/// The bundle a Secret holds; `None` when a key is missing or not text.
fn bundle_of(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(Bundle {
        ca_certs: text(CA_CERT_KEY)?,
        ca_key: text(CA_KEY_KEY)?,
        tls_cert: text(TLS_CERT_KEY)?,
        tls_key: text(TLS_KEY_KEY)?,
    })
}

fn data_of(bundle: &Bundle) -> BTreeMap<String, ByteString> {
    [
        (CA_CERT_KEY, &bundle.ca_certs),
        (CA_KEY_KEY, &bundle.ca_key),
        (TLS_CERT_KEY, &bundle.tls_cert),
        (TLS_KEY_KEY, &bundle.tls_key),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
    .collect()
}

fn material(bundle: &Bundle) -> Material {
    Material {
        cert: bundle.tls_cert.clone(),
        key: bundle.tls_key.clone(),
        ca_bundle: Some(bundle.ca_certs.clone()),
    }
}

/// Keeps the served certificate current ([`Maintainer::run`]).
pub struct Maintainer {
    /// Where new certificates are looked for.
    pub source: Source,
    /// The HTTPS server's certificate resolver, whose certificate is replaced on renewal.
    pub resolver: std::sync::Arc<SwappableCert>,
    /// The webhook configurations to register, if this process registers them.
    pub registration: Option<Registration>,
    /// The client the configurations are applied with.
    pub client: Client,
    /// The admission caches: configurations are registered only once they are synced.
    pub caches: Caches,
}

impl Maintainer {
    /// Until `shutdown` changes: registers the webhook configurations once the caches are
    /// synced (before, every validation would be refused as unavailable) and again whenever
    /// the CA bundle changes; serves each new certificate from the next handshake on. A new
    /// CA is registered before a certificate it signed is served, so the API server trusts
    /// every certificate it is shown.
    pub async fn run(self, served: Material, mut shutdown: watch::Receiver<bool>) {
        let mut served = served;
        let mut current = served.clone();
        let mut registered: Option<String> = None;
        loop {
            let registration_due = self.registration.is_some()
                && current.ca_bundle.is_some()
                && registered != current.ca_bundle;
            if registration_due && self.caches.is_synced() {
                registered = self.register(&current).await.or(registered);
            }
            let ca_change_unregistered = registered.is_some() && registered != current.ca_bundle;
            if (current.cert != served.cert || current.key != served.key) && !ca_change_unregistered
            {
                match self.resolver.replace(&current.cert, &current.key) {
                    Ok(()) => {
                        info!(expires = ?expiry(&current.cert), "serving a renewed certificate");
                        served = current.clone();
                    }
                    Err(error) => {
                        warn!(%error, "cannot serve the new certificate; keeping the old one")
                    }
                }
            }
            let interval = self.source.check_interval();
            let wait = if self.registration.is_some() && registered != current.ca_bundle {
                interval.min(MIN_CHECK_INTERVAL)
            } else {
                interval
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            match self.source.fetch().await {
                Ok(material) => current = material,
                Err(error) => warn!(%error, "cannot check the webhook certificate; retrying"),
            }
        }
    }

    /// Applies the configurations with `material`'s CA bundle; the bundle on success.
    async fn register(&self, material: &Material) -> Option<String> {
        let (registration, ca_bundle) = (self.registration.as_ref()?, material.ca_bundle.as_ref()?);
        match registration.apply(&self.client, ca_bundle).await {
            Ok(()) => {
                info!(endpoint = ?registration.endpoint, "webhook configurations registered");
                Some(ca_bundle.clone())
            }
            Err(error) => {
                warn!(%error, "cannot register the webhook configurations; retrying");
                None
            }
        }
    }
}

fn expiry(cert_pem: &str) -> Option<humantime::Timestamp> {
    certs::inspect(cert_pem)
        .ok()
        .map(|info| humantime::Timestamp::from(info.not_after))
}
