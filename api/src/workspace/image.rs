//! Recognising images that need special handling.

/// Whether `image` is code-server: its repository's last path segment is `code-server` or
/// ends with `-code-server`, whatever the registry, tag or digest. Such images get a
/// password, `--auth password`, and slow probes on `/healthz`; everything else runs as given.
pub fn is_code_server(image: &str) -> bool {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    // The last segment cannot contain a registry's `host:port`, so a `:` in it starts a tag.
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repository = last_segment
        .split_once(':')
        .map_or(last_segment, |(name, _)| name);
    repository == "code-server" || repository.ends_with("-code-server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_server_images_are_recognised_by_repository_name() {
        let cases = [
            ("codercom/code-server:4.96.2", true),
            ("docker.io/codercom/code-server", true),
            ("ghcr.io/coder/code-server@sha256:0123456789abcdef", true),
            ("code-server", true),
            ("code-server:latest", true),
            ("localhost:5000/code-server", true),
            (
                "registry.example.com:5000/team/code-server:4.96.2@sha256:abc",
                true,
            ),
            ("myorg/my-code-server:1", true),
            ("nginx", false),
            ("nginx:1.27", false),
            ("myorg/code-server-tools:1", false),
            ("code-server/nginx:1", false),
            ("localhost:5000/code-server-tools", false),
            ("quay.io/jupyter/base-notebook:latest", false),
            ("myorg/vscodeserver", false),
        ];
        for (image, expected) in cases {
            assert_eq!(is_code_server(image), expected, "image {image}");
        }
    }
}
