//! A registered cluster's kubeconfig, as read from its Secret: vetted so that it reaches the
//! cluster with nothing but what the Secret holds — never a program, a file or a credential
//! of GuildNet's own machines, and never without checking the server's certificate —
//! then turned into the client configuration of that cluster alone.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// How long connecting to a registered cluster's API server may take. Short: a dead
/// cluster must not hold a reconcile or a probe.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing a request to a registered cluster may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A kubeconfig that uses only what it contains, with the context it is used through.
#[derive(Clone, Debug)]
pub struct Vetted {
    kubeconfig: Kubeconfig,
    context: String,
    /// Whether the context's cluster names a `proxy-url`.
    has_proxy_url: bool,
}

/// Why a kubeconfig cannot be used; each message names the field and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeconfigError {
    /// Not a kubeconfig.
    #[error(
        "the Secret's kubeconfig cannot be read: {0}; store a kubeconfig file (YAML) under the key"
    )]
    Unreadable(String),
    /// No `current-context`, and not exactly one context to use instead.
    #[error(
        "the kubeconfig has no current-context and {0} contexts; set current-context to the one to use"
    )]
    NoContext(usize),
    /// `current-context` names a context the file does not define.
    #[error(
        "current-context {0:?} is not among the kubeconfig's contexts; set it to a context the file defines"
    )]
    UnknownContext(String),
    /// The context in use names a cluster the file does not define.
    #[error(
        "context {context:?} uses cluster {cluster:?}, which the kubeconfig does not define; add it under clusters"
    )]
    UnknownCluster {
        /// The context in use.
        context: String,
        /// The cluster it names.
        cluster: String,
    },
    /// The context in use names a user the file does not define.
    #[error(
        "context {context:?} uses user {user:?}, which the kubeconfig does not define; add it under users"
    )]
    UnknownUser {
        /// The context in use.
        context: String,
        /// The user it names.
        user: String,
    },
    /// The cluster in use has no server URL.
    #[error("clusters[{0:?}].cluster.server is not set; set it to the API server's https:// URL")]
    NoServer(String),
    /// A field that would make GuildNet use something outside the Secret.
    #[error("{field} {effect}, which GuildNet does not allow for a registered cluster; {fix}")]
    Outside {
        /// The field, as `users["name"].user.exec`.
        field: String,
        /// What it would make GuildNet do.
        effect: &'static str,
        /// What to write instead.
        fix: &'static str,
    },
}

/// The `effect` and `fix` of fields that would run a program on GuildNet's machine.
const RUNS_A_PROGRAM: &str = "runs a program on GuildNet's machine to get credentials";
const USE_INLINE_CREDENTIALS: &str = "give the user a token (e.g. a ServiceAccount's) or client-certificate-data and client-key-data instead";
const READS_A_FILE: &str = "reads a file on GuildNet's machine";

/// Reads `text` (a kubeconfig file) and vets the context it would be used through: its
/// `current-context`, or its only context.
pub fn vet(text: &str) -> Result<Vetted, KubeconfigError> {
    let kubeconfig =
        Kubeconfig::from_yaml(text).map_err(|e| KubeconfigError::Unreadable(e.to_string()))?;
    let context = match &kubeconfig.current_context {
        Some(name) => name.clone(),
        None if kubeconfig.contexts.len() == 1 => kubeconfig.contexts[0].name.clone(),
        None => return Err(KubeconfigError::NoContext(kubeconfig.contexts.len())),
    };
    let Some(used) = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
    else {
        return Err(KubeconfigError::UnknownContext(context));
    };
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == used.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| KubeconfigError::UnknownCluster {
            context: context.clone(),
            cluster: used.cluster.clone(),
        })?;
    let in_cluster = |key: &str| format!("clusters[{:?}].cluster.{key}", used.cluster);
    if cluster.server.as_deref().is_none_or(str::is_empty) {
        return Err(KubeconfigError::NoServer(used.cluster.clone()));
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(KubeconfigError::Outside {
            field: in_cluster("insecure-skip-tls-verify"),
            effect: "turns off the check of the server's certificate",
            fix: "remove it and put the cluster's CA (base64 PEM) in certificate-authority-data",
        });
    }
    if cluster.certificate_authority.is_some() {
        return Err(KubeconfigError::Outside {
            field: in_cluster("certificate-authority"),
            effect: READS_A_FILE,
            fix: "put the CA (base64 PEM) in certificate-authority-data instead",
        });
    }
    if let Some(user) = &used.user {
        let auth = kubeconfig
            .auth_infos
            .iter()
            .find(|u| &u.name == user)
            .ok_or_else(|| KubeconfigError::UnknownUser {
                context: context.clone(),
                user: user.clone(),
            })?;
        if let Some(auth) = &auth.auth_info {
            let in_user = |key: &str| format!("users[{user:?}].user.{key}");
            let refused = [
                (
                    auth.exec.is_some(),
                    "exec",
                    RUNS_A_PROGRAM,
                    USE_INLINE_CREDENTIALS,
                ),
                (
                    auth.auth_provider.is_some(),
                    "auth-provider",
                    RUNS_A_PROGRAM,
                    USE_INLINE_CREDENTIALS,
                ),
                (
                    auth.token_file.is_some(),
                    "tokenFile",
                    READS_A_FILE,
                    "put the token itself in token instead",
                ),
                (
                    auth.client_certificate.is_some(),
                    "client-certificate",
                    READS_A_FILE,
                    "put the certificate (base64 PEM) in client-certificate-data instead",
                ),
                (
                    auth.client_key.is_some(),
                    "client-key",
                    READS_A_FILE,
                    "put the key (base64 PEM) in client-key-data instead",
                ),
            ];
            if let Some((_, key, effect, fix)) = refused.into_iter().find(|(set, ..)| *set) {
                return Err(KubeconfigError::Outside {
                    field: in_user(key),
                    effect,
                    fix,
                });
            }
        }
    }
    let has_proxy_url = cluster
        .proxy_url
        .as_deref()
        .is_some_and(|url| !url.is_empty());
    Ok(Vetted {
        kubeconfig,
        context,
        has_proxy_url,
    })
}

impl Vetted {
    /// Whether the cluster is reached through the HTTP or SOCKS proxy its `proxy-url` names.
    pub fn uses_proxy_url(&self) -> bool {
        self.has_proxy_url
    }

    /// The context the cluster is reached through.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The client configuration of this cluster: its own connection pool once a client is
    /// built from it, a short connect timeout, and the vetted context's server, CA and
    /// credentials only.
    pub async fn client_config(&self) -> Result<kube::Config, kube::config::KubeconfigError> {
        let options = KubeConfigOptions {
            context: Some(self.context.clone()),
            ..KubeConfigOptions::default()
        };
        let mut config =
            kube::Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options).await?;
        // kube falls back to the process's HTTPS_PROXY; only the Secret's proxy-url counts.
        if !self.has_proxy_url {
            config.proxy_url = None;
        }
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.write_timeout = Some(WRITE_TIMEOUT);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig as `kube cluster up` and ServiceAccount-token scripts write them: the
    /// server's CA and the credentials inline.
    const INLINE: &str = r#"
apiVersion: v1
kind: Config
current-context: edge
contexts:
- name: edge
  context: {cluster: edge, user: guildnet}
- name: other
  context: {cluster: elsewhere, user: someone}
clusters:
- name: edge
  cluster:
    server: https://127.0.0.1:7443
    certificate-authority-data: Y2E=
users:
- name: guildnet
  user:
    token: secret-token
"#;

    fn with(find: &str, replace: &str) -> String {
        assert!(INLINE.contains(find), "{find}");
        INLINE.replacen(find, replace, 1)
    }

    fn refusal(text: &str) -> String {
        vet(text).expect_err("refused").to_string()
    }

    #[test]
    fn an_inline_kubeconfig_is_used_through_its_current_context() {
        let vetted = vet(INLINE).unwrap();
        assert_eq!(vetted.context(), "edge");
    }

    /// The other context names files and a cluster that is not there: never used, so never
    /// read.
    #[test]
    fn only_the_context_in_use_is_vetted() {
        let text = with(
            "users:\n",
            "users:\n- name: someone\n  user: {tokenFile: /var/run/secrets/token}\n",
        );
        assert!(vet(&text).is_ok());
    }

    #[tokio::test]
    async fn the_client_config_has_a_short_connect_timeout_and_the_inline_credentials() {
        // Without a CA of its own, the system's roots (the test CA is not a certificate).
        let text = with("    certificate-authority-data: Y2E=\n", "");
        let config = vet(&text).unwrap().client_config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:7443/");
        assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(config.write_timeout, Some(WRITE_TIMEOUT));
        assert!(!config.accept_invalid_certs);
        assert!(config.auth_info.token.is_some());
        assert_eq!(
            config.proxy_url, None,
            "only the Secret's proxy-url is used"
        );
    }

    #[test]
    fn a_program_for_credentials_is_refused_naming_the_field() {
        let exec = with(
            "token: secret-token",
            "exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, id]}",
        );
        let message = refusal(&exec);
        assert!(
            message.starts_with(r#"users["guildnet"].user.exec runs a program"#),
            "{message}"
        );
        assert!(message.contains("client-certificate-data"), "{message}");

        let provider = with("token: secret-token", "auth-provider: {name: gcp}");
        assert!(
            refusal(&provider)
                .starts_with(r#"users["guildnet"].user.auth-provider runs a program"#)
        );
    }

    #[test]
    fn files_of_guildnets_machine_are_refused_naming_the_field_and_the_fix() {
        for (find, replace, field, fix) in [
            (
                "token: secret-token",
                "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
                r#"users["guildnet"].user.tokenFile"#,
                "in token instead",
            ),
            (
                "token: secret-token",
                "client-certificate: /etc/guildnet/tls.crt",
                r#"users["guildnet"].user.client-certificate"#,
                "client-certificate-data",
            ),
            (
                "token: secret-token",
                "client-key: /etc/guildnet/tls.key",
                r#"users["guildnet"].user.client-key"#,
                "client-key-data",
            ),
            (
                "certificate-authority-data: Y2E=",
                "certificate-authority: /etc/ssl/ca.pem",
                r#"clusters["edge"].cluster.certificate-authority"#,
                "certificate-authority-data",
            ),
        ] {
            let message = refusal(&with(find, replace));
            assert!(message.starts_with(field), "{message}");
            assert!(
                message.contains("reads a file on GuildNet's machine"),
                "{message}"
            );
            assert!(message.contains(fix), "{message}");
        }
    }

    #[test]
    fn skipping_the_certificate_check_is_refused() {
        let text = with(
            "certificate-authority-data: Y2E=",
            "insecure-skip-tls-verify: true",
        );
        let message = refusal(&text);
        assert!(
            message.starts_with(r#"clusters["edge"].cluster.insecure-skip-tls-verify turns off"#),
            "{message}"
        );
        assert!(message.contains("certificate-authority-data"), "{message}");
    }

    #[test]
    fn a_kubeconfig_that_does_not_say_how_to_reach_the_cluster_says_what_to_set() {
        assert!(refusal("not: [a, kubeconfig").contains("cannot be read"));
        let no_current = with("current-context: edge\n", "");
        assert!(refusal(&no_current).contains("no current-context and 2 contexts"));
        let unknown = with("current-context: edge", "current-context: nowhere");
        assert!(refusal(&unknown).contains(r#"current-context "nowhere" is not among"#));
        assert_eq!(
            vet(&with(
                "context: {cluster: edge,",
                "context: {cluster: gone,"
            ))
            .unwrap_err(),
            KubeconfigError::UnknownCluster {
                context: "edge".into(),
                cluster: "gone".into()
            }
        );
        let no_user = with("user: guildnet}", "user: nobody}");
        assert!(
            refusal(&no_user)
                .contains(r#"uses user "nobody", which the kubeconfig does not define"#)
        );
        let no_server = with("server: https://127.0.0.1:7443", "server: \"\"");
        assert!(refusal(&no_server).contains(r#"clusters["edge"].cluster.server is not set"#));
    }
}
