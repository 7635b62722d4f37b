//! Credentials written into a spec in plain text. Everyone who may read Workspaces in a
//! namespace reads every spec, so a token in `spec.env[].value` is shared with all of them;
//! admission warns (it does not refuse: the value may be a harmless placeholder) and says
//! to use a Secret instead.

use crate::workspace::WorkspaceSpec;

/// Parts of variable names that say the value is a secret.
const SECRET_NAMES: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
];

/// Prefixes of well-known token formats (GitHub, GitLab, Slack, AWS, OpenAI-style keys).
const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "sk-",
];

/// One warning per environment variable whose literal value looks like a credential.
pub fn plaintext_credential_warnings(spec: &WorkspaceSpec) -> Vec<String> {
    spec.env
        .iter()
        .enumerate()
        .filter_map(|(index, var)| {
            let value = var.value.as_deref().filter(|v| !v.trim().is_empty())?;
            let upper = var.name.to_ascii_uppercase();
            let named = SECRET_NAMES.iter().any(|part| upper.contains(part));
            let shaped = TOKEN_PREFIXES.iter().any(|prefix| value.starts_with(prefix));
            (named || shaped).then(|| {
                format!(
                    "spec.env[{index}] ({}) holds what looks like a credential in plain text, readable by everyone who may read Workspaces here: put it in a Secret and use valueFrom.secretKeyRef",
                    var.name
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::WorkspaceEnvVar;

    fn env(name: &str, value: &str) -> WorkspaceEnvVar {
        WorkspaceEnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    #[test]
    fn secret_names_and_token_shapes_are_flagged_and_nothing_else() {
        let spec = WorkspaceSpec {
            image: "nginx".into(),
            env: vec![
                env("TZ", "Europe/Berlin"),
                env("GITHUB_TOKEN", "abc123"),
                env("NOTES", "ghp_0123456789abcdef"),
                env("db_password", "hunter2"),
                env("PASSWORD", ""),
                WorkspaceEnvVar {
                    name: "FROM_SECRET_TOKEN".into(),
                    value: None,
                    value_from: None,
                },
            ],
            ..WorkspaceSpec::default()
        };
        let warnings = plaintext_credential_warnings(&spec);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].starts_with("spec.env[1] (GITHUB_TOKEN)"));
        assert!(warnings[1].starts_with("spec.env[2] (NOTES)"));
        assert!(warnings[2].starts_with("spec.env[3] (db_password)"));
        assert!(warnings[0].contains("valueFrom.secretKeyRef"));
    }
}
