//! Command-line flags (each also settable from the environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

/// How callers prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Kubernetes bearer tokens, checked with TokenReview: in the Authorization header, or
    /// once at the login page, which then keeps a signed session cookie.
    Token,
    /// An identity header set by a front proxy (oauth2-proxy, Tailscale), believed only from
    /// the `--trusted-proxy` source addresses.
    Header,
    /// Everyone is `--dev-user`. Only for a local setup listening on loopback.
    None,
}

/// The proxy's command-line flags, each with an environment variable.
#[derive(Clone, Debug, Parser)]
#[command(about = "GuildNet's single-origin proxy and dashboard")]
pub struct Args {
    /// Address the proxy listens on.
    #[arg(long, env = "GUILDNET_PROXY_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM), e.g. a mounted cert-manager Secret;
    /// a renewed file is served from the next handshake on.
    #[arg(long, env = "GUILDNET_PROXY_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "GUILDNET_PROXY_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// How callers authenticate: token, header or none.
    #[arg(long, env = "GUILDNET_PROXY_AUTH", value_enum, default_value = "token")]
    pub auth: AuthMode,

    /// Header mode: the header carrying the user name (oauth2-proxy's, or
    /// `Tailscale-User-Login` behind Tailscale serve).
    #[arg(
        long,
        env = "GUILDNET_PROXY_USER_HEADER",
        default_value = "X-Auth-Request-User"
    )]
    pub user_header: String,

    /// Header mode: the header carrying the user's groups, comma-separated.
    #[arg(
        long,
        env = "GUILDNET_PROXY_GROUPS_HEADER",
        default_value = "X-Auth-Request-Groups"
    )]
    pub groups_header: String,

    /// Source addresses (CIDRs, comma-separated) whose identity and X-Forwarded-* headers
    /// are believed. Requests from anywhere else have those headers ignored.
    #[arg(long, env = "GUILDNET_PROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxy: Vec<IpNet>,

    /// Auth mode none: the user everyone is.
    #[arg(long, env = "GUILDNET_PROXY_DEV_USER", default_value = "developer")]
    pub dev_user: String,
    /// Auth mode none: the groups everyone has, comma-separated.
    #[arg(
        long,
        env = "GUILDNET_PROXY_DEV_GROUPS",
        value_delimiter = ',',
        default_value = "system:authenticated"
    )]
    pub dev_groups: Vec<String>,

    /// A file holding the key that signs session cookies (at least 32 bytes). Every replica
    /// must read the same key for a session to work on all of them; without it (or
    /// `--session-secret`) each process makes a random key and sessions end when it restarts.
    #[arg(long, env = "GUILDNET_PROXY_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,

    /// A Secret (in `--session-secret-namespace`) holding the session key, made with a
    /// random key if missing: how replicas in a cluster share one key.
    #[arg(
        long,
        env = "GUILDNET_PROXY_SESSION_SECRET",
        conflicts_with = "session_key_file"
    )]
    pub session_secret: Option<String>,
    /// The namespace of `--session-secret`; in a pod, its own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    pub session_secret_namespace: String,

    /// The Secret (in `--cluster-credentials-namespace`) where the operator hands over the
    /// kubeconfigs of clusters registered with `network: APIServerProxy`, one key per
    /// cluster: the proxy reaches their workspaces through their API servers with them.
    #[arg(
        long,
        env = "GUILDNET_PROXY_CLUSTER_CREDENTIALS_SECRET",
        default_value = "guildnet-cluster-credentials"
    )]
    pub cluster_credentials_secret: String,
    /// The namespace of `--cluster-credentials-secret`: GuildNet's own, where the operator
    /// runs (the operator's --system-namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    pub cluster_credentials_namespace: String,
    /// The Secret the operator hands each GuildDatabase's admin password over in (key
    /// `<namespace>.<name>`), for the database API under `/api/databases/`.
    #[arg(
        long,
        env = "GUILDNET_PROXY_DATABASE_CREDENTIALS_SECRET",
        default_value = "guildnet-database-credentials"
    )]
    pub database_credentials_secret: String,
    /// The namespace of `--database-credentials-secret` (the operator's --system-namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "guildnet-system")]
    pub database_credentials_namespace: String,

    /// How long a login lasts at most, from the login on, however active the session.
    #[arg(long, env = "GUILDNET_PROXY_SESSION_TTL", value_parser = humantime::parse_duration, default_value = "8h")]
    pub session_ttl: Duration,

    /// How long after login a session's identity (user, groups) is trusted for writes made
    /// impersonating it; after that a write is refused with 401 until the user logs in again
    /// (the cookie holds no token, so only a new TokenReview can re-check the identity).
    #[arg(long, env = "GUILDNET_PROXY_SESSION_REVALIDATE_AFTER", value_parser = humantime::parse_duration, default_value = "10m")]
    pub session_revalidate_after: Duration,

    /// How often each replica re-reads the sessions revoked by logouts (from
    /// `--session-secret`): a logout on another replica takes effect here within this.
    #[arg(long, env = "GUILDNET_PROXY_SESSION_REVOCATION_POLL", value_parser = positive_duration, default_value = "5s")]
    pub session_revocation_poll: Duration,

    /// Subdomain mode: also serve `<name>--<namespace>.<base domain>` as the root of that
    /// workspace, each workspace in an origin of its own.
    #[arg(long, env = "GUILDNET_PROXY_BASE_DOMAIN")]
    pub base_domain: Option<String>,

    /// Extra origins allowed to make dashboard API calls, besides the proxy's own (the Host
    /// the request came to), e.g. `https://guildnet.example.com`.
    #[arg(long, env = "GUILDNET_PROXY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// How often each workspace's `status.lastAccessTime` is written at most.
    #[arg(long, env = "GUILDNET_PROXY_ACTIVITY_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub activity_interval: Duration,

    /// How long an authorisation decision (SubjectAccessReview) or a TokenReview is reused.
    #[arg(long, env = "GUILDNET_PROXY_AUTH_CACHE_TTL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub auth_cache_ttl: Duration,

    /// TokenReviews of tokens the proxy has no recent answer for, per second per client
    /// address (behind `--trusted-proxy`, the client's address in X-Forwarded-For; IPv6 per
    /// /64); beyond them `429` with Retry-After. 0 turns the limit off.
    #[arg(long, env = "GUILDNET_PROXY_TOKEN_REVIEW_RATE", value_parser = rate, default_value = "10")]
    pub token_review_rate: f64,

    /// How many TokenReviews of unknown tokens a client may make at once before
    /// `--token-review-rate` applies.
    #[arg(long, env = "GUILDNET_PROXY_TOKEN_REVIEW_BURST", value_parser = clap::value_parser!(u32).range(1..), default_value = "20")]
    pub token_review_burst: u32,

    /// Pass `Authorization: Bearer` headers on to workspaces, for apps with bearer auth of
    /// their own (their callers then authenticate to the proxy with the session cookie).
    /// Even so, a token the proxy knows as a Kubernetes credential is never passed on.
    /// Off: no bearer token a client sends ever reaches a workspace.
    #[arg(long, env = "GUILDNET_PROXY_FORWARD_AUTHORIZATION")]
    pub forward_authorization: bool,

    /// A request body the proxy reads itself (the login form, dashboard API JSON) must
    /// arrive whole within this time, else `408`. Bodies forwarded to workspaces stream
    /// without a deadline.
    #[arg(long, env = "GUILDNET_PROXY_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub body_read_timeout: Duration,

    /// Request bodies the proxy reads at once from callers that have not authenticated
    /// (every login form); beyond them `503` with Retry-After.
    #[arg(long, env = "GUILDNET_PROXY_MAX_UNAUTHENTICATED_BODIES", value_parser = clap::value_parser!(u32).range(1..), default_value = "256")]
    pub max_unauthenticated_bodies: u32,

    /// Connections open at once that have not yet sent an authenticated request (idle, still
    /// sending their request head or TLS handshake, or without a credential the proxy
    /// knows); a connection accepted beyond them is closed at once. A connection stops
    /// counting at its first authenticated request.
    #[arg(long, env = "GUILDNET_PROXY_MAX_UNAUTHENTICATED_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..), default_value = "1024")]
    pub max_unauthenticated_connections: u32,

    /// A client must send its request headers within this time (slow clients are cut off).
    #[arg(long, env = "GUILDNET_PROXY_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) accepted, in bytes.
    #[arg(long, env = "GUILDNET_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Connecting to a workspace must succeed within this time.
    #[arg(long, env = "GUILDNET_PROXY_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,

    /// A workspace must start answering (send its response head) within this time.
    #[arg(long, env = "GUILDNET_PROXY_UPSTREAM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub upstream_timeout: Duration,

    /// Serving threads, each with its own listener and upstream connections; default: one
    /// per core.
    #[arg(long, env = "GUILDNET_PROXY_WORKERS")]
    pub workers: Option<usize>,

    /// Changefeeds of database tables (`/sse/databases/…/changes`) one user may hold open
    /// at once; more are refused with 429.
    #[arg(
        long,
        env = "GUILDNET_PROXY_MAX_DATABASE_FEEDS_PER_USER",
        default_value_t = 8
    )]
    pub max_database_feeds_per_user: usize,
    /// Changefeeds open at once on one GuildDatabase, whoever holds them.
    #[arg(
        long,
        env = "GUILDNET_PROXY_MAX_DATABASE_FEEDS_PER_DATABASE",
        default_value_t = 64
    )]
    pub max_database_feeds_per_database: usize,

    /// Kubernetes Events about workspaces kept for `/api/events` and SSE resumption.
    #[arg(long, env = "GUILDNET_PROXY_EVENT_BUFFER", default_value_t = 2000)]
    pub event_buffer: usize,
}

/// A duration above zero.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be more than 0".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// A rate per second: a number, zero or more.
fn rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a rate per second (a number, 0 or more)"
        )),
    }
}

/// Settings that would be unsafe or cannot work, naming the flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--auth=none` with a `--listen` address off loopback.
    #[error(
        "--auth=none lets anyone in as {dev_user:?}; it is only allowed on a loopback --listen \
         address (got {listen}). Use --auth=token or --auth=header."
    )]
    OpenOffLoopback {
        /// The user everyone would be (`--dev-user`).
        dev_user: String,
        /// The address asked for (`--listen`).
        listen: SocketAddr,
    },
    /// `--auth=header` without `--trusted-proxy`: no identity header would be believed.
    #[error(
        "--auth=header needs --trusted-proxy: the source addresses of the front proxy \
         that sets the identity header"
    )]
    HeaderModeWithoutTrustedProxy,
    /// `--max-header-bytes` below 8192, too small for a browser's usual request head.
    #[error("--max-header-bytes must be at least {MIN_HEADER_BYTES}")]
    HeaderLimitTooSmall,
}

/// The smallest `--max-header-bytes`: room for a browser's usual request head.
const MIN_HEADER_BYTES: usize = 8192;

impl Args {
    /// Refuses settings that would be unsafe or cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth == AuthMode::None && !self.listen.ip().is_loopback() {
            return Err(ConfigError::OpenOffLoopback {
                dev_user: self.dev_user.clone(),
                listen: self.listen,
            });
        }
        if self.auth == AuthMode::Header && self.trusted_proxy.is_empty() {
            return Err(ConfigError::HeaderModeWithoutTrustedProxy);
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::HeaderLimitTooSmall);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("guildnet-proxy").chain(extra.iter().copied()))
    }

    #[test]
    fn none_is_refused_off_loopback() {
        let err = args(&["--auth=none", "--listen=0.0.0.0:8090"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        args(&["--auth=none"]).validate().unwrap();
    }

    #[test]
    fn header_mode_needs_trusted_sources() {
        let err = args(&["--auth=header"]).validate().unwrap_err().to_string();
        assert!(err.contains("--trusted-proxy"), "{err}");
        args(&["--auth=header", "--trusted-proxy=10.0.0.0/8,127.0.0.1/32"])
            .validate()
            .unwrap();
    }

    #[test]
    fn limits_have_defaults_and_refuse_nonsense() {
        let defaults = args(&[]);
        assert_eq!(defaults.token_review_rate, 10.0);
        assert_eq!(defaults.token_review_burst, 20);
        assert_eq!(defaults.body_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_unauthenticated_bodies, 256);
        assert_eq!(defaults.max_unauthenticated_connections, 1024);
        assert!(!defaults.forward_authorization);
        assert_eq!(defaults.session_ttl, Duration::from_secs(8 * 3600));
        assert_eq!(defaults.session_revalidate_after, Duration::from_secs(600));
        assert_eq!(defaults.session_revocation_poll, Duration::from_secs(5));
        let parse = |extra: &[&str]| {
            Args::try_parse_from(std::iter::once("guildnet-proxy").chain(extra.iter().copied()))
        };
        assert!(parse(&["--token-review-rate=-1"]).is_err());
        assert!(parse(&["--token-review-rate=NaN"]).is_err());
        assert!(parse(&["--token-review-burst=0"]).is_err());
        assert!(parse(&["--max-unauthenticated-bodies=0"]).is_err());
        assert!(parse(&["--max-unauthenticated-connections=0"]).is_err());
        assert!(parse(&["--session-revocation-poll=0s"]).is_err());
        assert_eq!(
            parse(&["--token-review-rate=0"]).unwrap().token_review_rate,
            0.0
        );
    }

    #[test]
    fn refusals_name_the_flag_and_the_fix() {
        let refusal = |extra: &[&str]| args(extra).validate().unwrap_err().to_string();
        assert_eq!(
            refusal(&["--auth=none", "--listen=0.0.0.0:8090"]),
            "--auth=none lets anyone in as \"developer\"; it is only allowed on a loopback \
             --listen address (got 0.0.0.0:8090). Use --auth=token or --auth=header."
        );
        assert_eq!(
            refusal(&["--auth=header"]),
            "--auth=header needs --trusted-proxy: the source addresses of the front proxy that \
             sets the identity header"
        );
        assert_eq!(
            refusal(&["--max-header-bytes=100"]),
            "--max-header-bytes must be at least 8192"
        );
    }
}
