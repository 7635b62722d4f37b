//! The command line.

use crate::admission::Settings;
use crate::certs::Lifetimes;
use crate::registration::{self, Endpoint, Registration};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Kubernetes' namespace controller and garbage collector as kube-controller-manager
/// authenticates them with `--use-service-account-credentials` (kubeadm's default and most
/// distributions'): refusing them would leave namespaces terminating and dependents behind.
const KUBERNETES_CONTROLLERS: [&str; 2] = [
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
];

/// GuildNet's admission webhook for Workspaces: owner labels, defaults, image allowlists,
/// resource ceilings, per-owner Quotas and Capabilities. Connects with KUBECONFIG or the
/// in-cluster configuration.
#[derive(Clone, Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Address of the HTTPS server the API server calls (/mutate, /validate, /healthz,
    /// /readyz).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP metrics server (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9444")]
    pub metrics_listen: SocketAddr,
    /// GuildNet's namespace: excluded from interception, home of cluster-wide Quotas and,
    /// by default, of the certificate Secret and the Service.
    #[arg(long, default_value = "guildnet-system")]
    pub system_namespace: String,
    /// The user name of GuildNet's operator, whose requests always pass.
    #[arg(
        long,
        default_value = "system:serviceaccount:guildnet-system:guildnet-operator"
    )]
    pub operator_username: String,
    /// The user name of GuildNet's proxy, whose requests always pass.
    #[arg(
        long,
        default_value = "system:serviceaccount:guildnet-system:guildnet-proxy"
    )]
    pub proxy_username: String,
    /// Another user name whose requests always pass, exactly (repeatable; replaces the
    /// default list). Where kube-controller-manager runs without
    /// --use-service-account-credentials, its controllers authenticate as
    /// system:kube-controller-manager: name that instead.
    #[arg(long = "trusted-user", default_values = KUBERNETES_CONTROLLERS)]
    pub trusted_users: Vec<String>,

    /// Serving certificate (PEM chain), e.g. mounted from cert-manager's Secret. Without
    /// it the webhook manages its own CA and certificate in --tls-secret-name.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) to register with the webhook configurations when the certificate
    /// comes from files. Omit it when cert-manager's CA injector fills in the bundle.
    #[arg(long, requires = "tls_cert_file")]
    pub ca_file: Option<PathBuf>,
    /// CA (PEM) of the API server's client certificate for admission webhooks (its
    /// `--admission-control-config-file`): only callers presenting a certificate it signed
    /// are served on --listen. Without it anyone who reaches the port can send
    /// AdmissionReviews of their own making.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Namespace of the self-managed certificate Secret [default: --system-namespace].
    #[arg(long)]
    pub tls_secret_namespace: Option<String>,
    /// Name of the self-managed certificate Secret.
    #[arg(long, default_value = "guildnet-webhook-tls")]
    pub tls_secret_name: String,
    /// Validity of a self-managed serving certificate, e.g. 720h.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "720h")]
    pub cert_validity: Duration,
    /// A self-managed serving certificate is renewed this long before it expires.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "240h")]
    pub cert_renew_before: Duration,
    /// Extra host name or IP address for the self-managed serving certificate (repeatable),
    /// besides the host of --webhook-url or the names of --service-name.
    #[arg(long)]
    pub cert_host: Vec<String>,
    /// Validity of the self-managed CA; at least twice --cert-validity.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "87600h")]
    pub ca_validity: Duration,

    /// Register the webhook configurations for a webhook reached at this https:// URL,
    /// e.g. https://127.0.0.1:9443 when it runs on the host.
    #[arg(long, conflicts_with = "service_name")]
    pub webhook_url: Option<String>,
    /// Register the webhook configurations for a webhook reached through this Service.
    /// Without this or --webhook-url, the configurations are left to the installer.
    #[arg(long)]
    pub service_name: Option<String>,
    /// Namespace of --service-name [default: --system-namespace].
    #[arg(long)]
    pub service_namespace: Option<String>,
    /// Port of --service-name.
    #[arg(long, default_value_t = 443)]
    pub service_port: u16,

    /// How long an admitted create counts against Quotas before the cache shows it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub quota_reservation_ttl: Duration,
}

/// Why the flags do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--webhook-url` is not an `https://` URL with a host.
    #[error(transparent)]
    Endpoint(#[from] registration::Error),
    /// `--cert-validity`, `--cert-renew-before` and `--ca-validity` do not fit together.
    #[error(transparent)]
    Lifetimes(#[from] crate::certs::Error),
    /// `--tls-cert-file` with `--webhook-url` or `--service-name`, but no `--ca-file`.
    #[error(
        "registering the webhook configurations needs the CA bundle of --tls-cert-file: pass --ca-file, or omit --webhook-url/--service-name and let cert-manager's CA injector register"
    )]
    MissingCaFile,
    /// A self-managed certificate without `--webhook-url`, `--service-name` or `--cert-host`.
    #[error(
        "a self-managed certificate must name the host the API server dials: pass --webhook-url, --service-name or --cert-host"
    )]
    NoCertHost,
}

impl Args {
    /// The admission settings.
    pub fn settings(&self) -> Settings {
        let components = [&self.operator_username, &self.proxy_username];
        Settings {
            trusted_users: components
                .into_iter()
                .chain(&self.trusted_users)
                .cloned()
                .collect(),
            system_namespace: self.system_namespace.clone(),
        }
    }

    /// The webhook configurations to register, if any.
    pub fn registration(&self) -> Result<Option<Registration>, Error> {
        let endpoint = match (&self.webhook_url, &self.service_name) {
            (Some(url), _) => Endpoint::url(url)?,
            (None, Some(name)) => Endpoint::Service {
                namespace: self
                    .service_namespace
                    .clone()
                    .unwrap_or_else(|| self.system_namespace.clone()),
                name: name.clone(),
                port: self.service_port,
            },
            (None, None) => return Ok(None),
        };
        if self.tls_cert_file.is_some() && self.ca_file.is_none() {
            return Err(Error::MissingCaFile);
        }
        Ok(Some(Registration {
            endpoint,
            system_namespace: self.system_namespace.clone(),
        }))
    }

    /// The self-managed certificate lifetimes, checked.
    pub fn lifetimes(&self) -> Result<Lifetimes, Error> {
        let lifetimes = Lifetimes {
            cert_validity: self.cert_validity,
            cert_renew_before: self.cert_renew_before,
            ca_validity: self.ca_validity,
        };
        lifetimes.check()?;
        Ok(lifetimes)
    }

    /// The hosts a self-managed serving certificate names: those the API server dials
    /// through `registration`, and --cert-host.
    pub fn cert_hosts(&self, registration: Option<&Registration>) -> Result<Vec<String>, Error> {
        let mut hosts = registration.map(|r| r.endpoint.hosts()).unwrap_or_default();
        for host in &self.cert_host {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        if hosts.is_empty() {
            return Err(Error::NoCertHost);
        }
        Ok(hosts)
    }

    /// The namespace of the self-managed certificate Secret.
    pub fn tls_secret_namespace(&self) -> &str {
        self.tls_secret_namespace
            .as_deref()
            .unwrap_or(&self.system_namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("guildnet-webhook").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_fit_an_in_cluster_install() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(
            args.settings().trusted_users,
            [
                "system:serviceaccount:guildnet-system:guildnet-operator",
                "system:serviceaccount:guildnet-system:guildnet-proxy",
                "system:serviceaccount:kube-system:namespace-controller",
                "system:serviceaccount:kube-system:generic-garbage-collector",
            ]
        );
        assert_eq!(args.tls_secret_namespace(), "guildnet-system");
        assert!(args.registration().unwrap().is_none());
        assert!(args.lifetimes().is_ok());
        assert!(matches!(args.cert_hosts(None), Err(Error::NoCertHost)));
    }

    #[test]
    fn trusted_users_are_named_exactly_and_replace_the_defaults() {
        let args = parse(&[
            "--operator-username",
            "guildnet-admin",
            "--proxy-username",
            "guildnet-admin",
            "--trusted-user",
            "system:kube-controller-manager",
        ])
        .unwrap();
        assert_eq!(
            args.settings().trusted_users,
            [
                "guildnet-admin",
                "guildnet-admin",
                "system:kube-controller-manager"
            ]
        );
    }

    #[test]
    fn a_url_or_a_service_registers() {
        let url = parse(&["--webhook-url", "https://127.0.0.1:9443"]).unwrap();
        assert_eq!(
            url.registration().unwrap().unwrap().endpoint,
            Endpoint::Url("https://127.0.0.1:9443".to_owned())
        );
        let service = parse(&["--service-name", "guildnet-webhook"]).unwrap();
        let endpoint = service.registration().unwrap().unwrap().endpoint;
        assert_eq!(
            endpoint,
            Endpoint::Service {
                namespace: "guildnet-system".to_owned(),
                name: "guildnet-webhook".to_owned(),
                port: 443
            }
        );
        assert!(parse(&["--webhook-url", "https://a", "--service-name", "b"]).is_err());
        let registration = url.registration().unwrap();
        assert_eq!(
            url.cert_hosts(registration.as_ref()).unwrap(),
            ["127.0.0.1"]
        );
        let extra = parse(&["--cert-host", "localhost", "--cert-host", "::1"]).unwrap();
        assert_eq!(extra.cert_hosts(None).unwrap(), ["localhost", "::1"]);
        let plain = parse(&["--webhook-url", "http://127.0.0.1:9443"]).unwrap();
        assert!(plain.registration().is_err());
    }

    #[test]
    fn certificate_files_come_in_pairs_and_register_only_with_a_ca() {
        assert!(parse(&["--tls-cert-file", "c.pem"]).is_err());
        assert!(parse(&["--ca-file", "ca.pem"]).is_err());
        let files = parse(&[
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
            "--webhook-url",
            "https://127.0.0.1:9443",
        ])
        .unwrap();
        assert!(matches!(files.registration(), Err(Error::MissingCaFile)));
    }

    #[test]
    fn lifetimes_must_allow_renewal() {
        let short = parse(&["--cert-validity", "10s", "--cert-renew-before", "5s"]).unwrap();
        assert_eq!(
            short.lifetimes().unwrap().cert_validity,
            Duration::from_secs(10)
        );
        let backwards = parse(&["--cert-validity", "10m", "--cert-renew-before", "1h"]).unwrap();
        assert!(backwards.lifetimes().is_err());
        let ca_too_short = parse(&["--cert-validity", "1h", "--ca-validity", "90m"]).unwrap();
        assert!(ca_too_short.lifetimes().is_err());
    }
}
