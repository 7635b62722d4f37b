//! Container image references and the allow patterns of `Capabilities.spec.images.allow`.
//!
//! References are normalised the way Docker and containerd resolve them, so that the
//! policy decides about the image that is actually pulled: `nginx` is
//! `docker.io/library/nginx:latest`, `index.docker.io/x/y` is `docker.io/x/y`, a first path
//! component that contains `.` or `:` (or is `localhost`) is a registry, and a registry name
//! is case-insensitive. A digest is kept, as the runtime pulls by digest when one is given.
//!
//! # Pattern semantics
//!
//! Patterns are normalised exactly like references (so `nginx` means
//! `docker.io/library/nginx`, and `docker.io/*` means `docker.io/library/*`; all of Docker
//! Hub is `docker.io/*/*`), then compared part by part, never as strings, which makes
//! prefix tricks (`library-evil`, `quay.io.evil.com`, `code-server-evil`) impossible:
//!
//! - `*` alone matches every image.
//! - Registry: `*` matches within one DNS label (`*.gcr.io` admits `eu.gcr.io`, not
//!   `evil.eu.gcr.io`); no other wildcard. A port must match exactly.
//! - Repository path: `*` matches within one path segment (`ghcr.io/*/tool`,
//!   `ghcr.io/org/code-*`), except a final `/*`, which matches one or more segments at any
//!   depth below (`quay.io/jupyter/*` admits `quay.io/jupyter/a/b`, not `quay.io/jupyter`).
//! - Tag: none, or `*`, matches any tag and any digest of the repository; any other tag
//!   pattern (`3.*`, where `*` matches any characters) must match the reference's tag, so a
//!   digest-only reference never matches it. A reference with both tag and digest is judged
//!   by its tag: the runtime pulls the digest, which the registry serves only from that same
//!   repository, so the repository is enforced exactly and the tag is advisory.
//! - Digest (`nginx@sha256:…`): the reference must carry exactly that digest.

use std::fmt;

/// The registry Docker Hub images live on.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, the same registry.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The namespace of Docker Hub's official single-name images (`nginx`).
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag pulled when a reference has neither tag nor digest.
const DEFAULT_TAG: &str = "latest";
/// Docker's limit on `registry/repository`.
const MAX_NAME_LEN: usize = 255;
/// Docker's limit on a tag.
const MAX_TAG_LEN: usize = 128;
/// The wildcard of patterns.
const WILDCARD: &str = "*";

/// What is wrong with an image reference or pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageProblem {
    /// The text is empty.
    #[error("it is empty")]
    Empty,
    /// The text contains whitespace or control characters anywhere, e.g. a trailing newline.
    #[error("it contains whitespace or control characters")]
    Whitespace,
    /// The repository path has uppercase letters (only the registry is case-insensitive).
    #[error("the repository name must be lowercase")]
    UppercaseRepository,
    /// `registry/repository` is longer than Docker's limit of 255 characters.
    #[error("the name (registry and repository) is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// The registry, as given, is not a host name with an optional port, e.g. `localhost:5000`.
    #[error(
        "registry {0:?} is not a host name with an optional port, e.g. quay.io or localhost:5000"
    )]
    InvalidRegistry(String),
    /// A `/`-separated repository path component, as given, breaks Docker's naming rules.
    #[error(
        "repository path component {0:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"
    )]
    InvalidPathComponent(String),
    /// The tag, as given, is not 1 to 128 of `[A-Za-z0-9_.-]` or starts with `.` or `-`.
    #[error(
        "tag {0:?} must be 1 to {MAX_TAG_LEN} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )]
    InvalidTag(String),
    /// The digest, as given, is not `sha256:`/`sha384:`/`sha512:` and lowercase hex of its length.
    #[error(
        "digest {0:?} must be sha256:, sha384: or sha512: followed by 64, 96 or 128 lowercase hex digits"
    )]
    InvalidDigest(String),
}

/// An image reference or pattern that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid image {}: {problem}", syntax.noun())]
pub struct ImageError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub problem: ImageProblem,
    syntax: Syntax,
}

/// Whether text is a reference or a pattern (which may hold wildcards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    Reference,
    Pattern,
}

impl Syntax {
    fn noun(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Pattern => "pattern",
        }
    }

    /// The character a wildcard stands for when checking grammar: patterns may put `*`
    /// wherever a letter may stand.
    fn wildcard_stand_in(self, c: char) -> char {
        match (self, c) {
            (Self::Pattern, '*') => 'a',
            _ => c,
        }
    }
}

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference such as `nginx`, `codercom/code-server:4.96.2`,
    /// `localhost:5000/team/app@sha256:…`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let parts = Parts::split(input, Syntax::Reference)?;
        let tag = match (&parts.tag, &parts.digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag.clone(),
        };
        Ok(Self {
            registry: parts.registry,
            repository: parts.repository,
            tag,
            digest: parts.digest,
        })
    }

    /// The registry host (and port), lowercase: `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path below the registry: `library/nginx`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when the reference had neither tag nor digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `sha256:…`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        write_tag_and_digest(f, self.tag.as_deref(), self.digest.as_deref())
    }
}

/// An allow pattern of `spec.images.allow`; see the module documentation for its meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePattern {
    kind: PatternKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternKind {
    /// `*`: every image.
    Everything,
    Repository(RepositoryPattern),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RepositoryPattern {
    registry: String,
    /// Path segment globs.
    path: Vec<String>,
    /// A final `/*`: one or more further segments at any depth.
    below: bool,
    /// A tag glob; `None` (or `*` as written) admits every tag and digest.
    tag: Option<String>,
    digest: Option<String>,
}

impl ImagePattern {
    /// Parses and normalises a pattern such as `quay.io/jupyter/*` or `python:3.*`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        if input == WILDCARD {
            return Ok(Self {
                kind: PatternKind::Everything,
            });
        }
        let parts = Parts::split(input, Syntax::Pattern)?;
        let mut path: Vec<String> = parts.repository.split('/').map(str::to_owned).collect();
        let below = path.last().is_some_and(|last| last == WILDCARD);
        if below {
            path.pop();
        }
        Ok(Self {
            kind: PatternKind::Repository(RepositoryPattern {
                registry: parts.registry,
                path,
                below,
                tag: parts.tag.filter(|tag| tag != WILDCARD),
                digest: parts.digest,
            }),
        })
    }

    /// Whether the pattern admits `image`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        match &self.kind {
            PatternKind::Everything => true,
            PatternKind::Repository(pattern) => pattern.matches(image),
        }
    }
}

impl RepositoryPattern {
    fn matches(&self, image: &ImageRef) -> bool {
        glob(&self.registry, &image.registry, &['.', ':'])
            && self.matches_path(&image.repository)
            && self.matches_tag(image.tag.as_deref())
            && self.matches_digest(image.digest.as_deref())
    }

    fn matches_path(&self, repository: &str) -> bool {
        let segments: Vec<&str> = repository.split('/').collect();
        let depth_fits = if self.below {
            segments.len() > self.path.len()
        } else {
            segments.len() == self.path.len()
        };
        depth_fits
            && self
                .path
                .iter()
                .zip(&segments)
                .all(|(pattern, segment)| glob(pattern, segment, &[]))
    }

    fn matches_tag(&self, tag: Option<&str>) -> bool {
        match (&self.tag, tag) {
            (None, _) => true,
            (Some(pattern), Some(tag)) => glob(pattern, tag, &[]),
            (Some(_), None) => false,
        }
    }

    fn matches_digest(&self, digest: Option<&str>) -> bool {
        self.digest.is_none() || self.digest.as_deref() == digest
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PatternKind::Everything => f.write_str(WILDCARD),
            PatternKind::Repository(pattern) => {
                write!(f, "{}/{}", pattern.registry, pattern.path.join("/"))?;
                if pattern.below {
                    let separator = if pattern.path.is_empty() { "" } else { "/" };
                    write!(f, "{separator}{WILDCARD}")?;
                }
                write_tag_and_digest(f, pattern.tag.as_deref(), pattern.digest.as_deref())
            }
        }
    }
}

fn write_tag_and_digest(
    f: &mut fmt::Formatter<'_>,
    tag: Option<&str>,
    digest: Option<&str>,
) -> fmt::Result {
    if let Some(tag) = tag {
        write!(f, ":{tag}")?;
    }
    if let Some(digest) = digest {
        write!(f, "@{digest}")?;
    }
    Ok(())
}

/// A reference or pattern split into normalised, validated parts.
struct Parts {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Parts {
    fn split(input: &str, syntax: Syntax) -> Result<Self, ImageError> {
        let fail = |problem| ImageError {
            input: input.to_owned(),
            problem,
            syntax,
        };
        if input.is_empty() {
            return Err(fail(ImageProblem::Empty));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(ImageProblem::Whitespace));
        }
        let (rest, digest) = split_digest(input);
        let (name, tag) = split_tag(rest);
        let (registry, repository) = split_registry(name);
        let registry = normalise_registry(registry);
        let parts = Self {
            repository: normalise_repository(&registry, repository),
            registry,
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        };
        parts.validate(syntax).map_err(fail)?;
        Ok(parts)
    }

    fn validate(&self, syntax: Syntax) -> Result<(), ImageProblem> {
        validate_registry(&self.registry, syntax)?;
        validate_repository(&self.repository, syntax)?;
        if self.registry.len() + 1 + self.repository.len() > MAX_NAME_LEN {
            return Err(ImageProblem::TooLong);
        }
        if let Some(tag) = &self.tag {
            validate_tag(tag, syntax)?;
        }
        if let Some(digest) = &self.digest {
            validate_digest(digest)?;
        }
        Ok(())
    }
}

/// Splits `name[:tag]@digest` at the first `@`.
fn split_digest(input: &str) -> (&str, Option<&str>) {
    match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    }
}

/// Splits `name:tag` at a `:` after the last `/`, so `localhost:5000/x` has no tag.
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    let last_segment = rest.rfind('/').map_or(0, |slash| slash + 1);
    match rest[last_segment..].rfind(':') {
        Some(colon) => {
            let colon = last_segment + colon;
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        None => (rest, None),
    }
}

/// Splits a name into registry and repository as Docker does: the first component is a
/// registry when it contains `.` or `:`, is `localhost`, or has uppercase letters (which a
/// repository may not); otherwise the registry is Docker Hub.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// Lowercases a registry (host names are case-insensitive) and folds Docker Hub's legacy
/// name into `docker.io`.
fn normalise_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB.to_owned()
    } else {
        registry
    }
}

/// Puts a single-name Docker Hub repository under `library/`, as Docker does. `registry`
/// is already normalised.
fn normalise_repository(registry: &str, repository: &str) -> String {
    if registry == DOCKER_HUB && !repository.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{repository}")
    } else {
        repository.to_owned()
    }
}

/// `host[:port]`, the host a DNS name or a bracketed IPv6 address.
fn validate_registry(registry: &str, syntax: Syntax) -> Result<(), ImageProblem> {
    let invalid = || ImageProblem::InvalidRegistry(registry.to_owned());
    let (host, port) = split_port(registry).ok_or_else(invalid)?;
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let host: String = host.chars().map(|c| syntax.wildcard_stand_in(c)).collect();
    let host_ok = is_ipv6_literal(&host) || host.split('.').all(is_dns_label);
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// Splits `host:port`, minding the colons inside `[ipv6]`. `None` for an unclosed bracket.
fn split_port(registry: &str) -> Option<(&str, Option<&str>)> {
    let host_end = if registry.starts_with('[') {
        registry.find(']')? + 1
    } else {
        registry.find(':').unwrap_or(registry.len())
    };
    let (host, rest) = registry.split_at(host_end);
    match rest {
        "" => Some((host, None)),
        _ => rest.strip_prefix(':').map(|port| (host, Some(port))),
    }
}

fn is_ipv6_literal(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.contains(':') && h.chars().all(|c| c.is_ascii_hexdigit() || c == ':'))
}

/// A DNS label: letters, digits and inner `-`.
fn is_dns_label(label: &str) -> bool {
    let alphanumeric_ends = label.starts_with(|c: char| c.is_ascii_alphanumeric())
        && label.ends_with(|c: char| c.is_ascii_alphanumeric());
    alphanumeric_ends && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Each `/`-separated component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_repository(repository: &str, syntax: Syntax) -> Result<(), ImageProblem> {
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ImageProblem::UppercaseRepository);
    }
    repository.split('/').try_for_each(|component| {
        let stand_in: String = component
            .chars()
            .map(|c| syntax.wildcard_stand_in(c))
            .collect();
        if is_path_component(&stand_in) {
            Ok(())
        } else {
            Err(ImageProblem::InvalidPathComponent(component.to_owned()))
        }
    })
}

fn is_path_component(component: &str) -> bool {
    let is_alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    // Splitting at every letter and digit leaves exactly the separators, as non-empty pieces.
    let separators_ok = component
        .split(is_alphanumeric)
        .all(|separator| matches!(separator, "" | "." | "_" | "__") || is_dashes(separator));
    component.starts_with(is_alphanumeric) && component.ends_with(is_alphanumeric) && separators_ok
}

fn is_dashes(separator: &str) -> bool {
    separator.chars().all(|c| c == '-')
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str, syntax: Syntax) -> Result<(), ImageProblem> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars().map(|c| syntax.wildcard_stand_in(c));
    let first_ok = chars.next().is_some_and(word);
    let rest_ok = chars.all(|c| word(c) || c == '.' || c == '-');
    if first_ok && rest_ok && tag.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(ImageProblem::InvalidTag(tag.to_owned()))
    }
}

/// `algorithm:hex` for the digests registries serve, with the hex length the algorithm
/// produces, so a truncated or mistyped digest is refused rather than never matching.
fn validate_digest(digest: &str) -> Result<(), ImageProblem> {
    let hex_len = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex, 64),
        Some(("sha384", hex)) => (hex, 96),
        Some(("sha512", hex)) => (hex, 128),
        _ => return Err(ImageProblem::InvalidDigest(digest.to_owned())),
    };
    let (hex, len) = hex_len;
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if hex.len() == len && hex.chars().all(lower_hex) {
        Ok(())
    } else {
        Err(ImageProblem::InvalidDigest(digest.to_owned()))
    }
}

/// Whether `pattern`, where `*` matches any run of characters other than `boundaries`,
/// matches the whole of `text`. Dynamic programming over the two strings, so the time is
/// bounded by their product whatever the pattern (no exponential backtracking).
fn glob(pattern: &str, text: &str, boundaries: &[char]) -> bool {
    let text: Vec<char> = text.chars().collect();
    // matched[j]: the pattern read so far matches text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for p in pattern.chars() {
        let mut next = Vec::with_capacity(matched.len());
        next.push(p == '*' && matched[0]);
        for (j, &t) in text.iter().enumerate() {
            let extends = if p == '*' {
                matched[j + 1] || (next[j] && !boundaries.contains(&t))
            } else {
                matched[j] && p == t
            };
            next.push(extends);
        }
        matched = next;
    }
    matched[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const NGINX_PINNED_A: &str =
        "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn normalised(input: &str) -> String {
        ImageRef::parse(input)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            (
                "codercom/code-server:4.96.2",
                "docker.io/codercom/code-server:4.96.2",
            ),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            (
                "index.docker.io/library/nginx:1",
                "docker.io/library/nginx:1",
            ),
            (
                "Docker.IO/codercom/code-server",
                "docker.io/codercom/code-server:latest",
            ),
            (
                "quay.io/jupyter/base-notebook",
                "quay.io/jupyter/base-notebook:latest",
            ),
            ("Quay.IO/jupyter/x:Latest_1", "quay.io/jupyter/x:Latest_1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost:5000/team/x:1.0", "localhost:5000/team/x:1.0"),
            ("localhost/x", "localhost/x:latest"),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
            (
                "registry.example.com:443/a/b/c:rc_1.0-2",
                "registry.example.com:443/a/b/c:rc_1.0-2",
            ),
            ("ghcr.io/org/team/tool:v1", "ghcr.io/org/team/tool:v1"),
            ("a__b/c.d-e", "docker.io/a__b/c.d-e:latest"),
            ("a/b---c", "docker.io/a/b---c:latest"),
            // As in Docker, a lone `host:port` is an official image with a tag.
            ("localhost:5000", "docker.io/library/localhost:5000"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalised(input), expected, "{input}");
        }
    }

    #[test]
    fn keeps_digests_and_adds_no_tag_to_them() {
        assert_eq!(
            normalised(&format!("nginx@{SHA_A}")),
            format!("docker.io/library/nginx@{SHA_A}")
        );
        assert_eq!(
            normalised(&format!("nginx:1.25@{SHA_A}")),
            format!("docker.io/library/nginx:1.25@{SHA_A}")
        );
        let sha512 = format!("sha512:{}", "0".repeat(128));
        let image = ImageRef::parse(&format!("localhost:5000/x@{sha512}")).unwrap();
        assert_eq!(
            (
                image.registry(),
                image.repository(),
                image.tag(),
                image.digest()
            ),
            ("localhost:5000", "x", None, Some(sha512.as_str()))
        );
    }

    #[test]
    fn rejects_invalid_references() {
        use ImageProblem::*;
        let cases = [
            (String::new(), Empty),
            ("nginx latest".into(), Whitespace),
            (" nginx".into(), Whitespace),
            ("nginx\n".into(), Whitespace),
            ("ngi\u{7f}nx".into(), Whitespace),
            ("Nginx".into(), UppercaseRepository),
            ("docker.io/Library/nginx".into(), UppercaseRepository),
            ("quay.io/jupyter/Base".into(), UppercaseRepository),
            (
                "nginx@sha256:abc".into(),
                InvalidDigest("sha256:abc".into()),
            ),
            (
                format!("nginx@sha256:{}", "A".repeat(64)),
                InvalidDigest(format!("sha256:{}", "A".repeat(64))),
            ),
            (
                format!("nginx@md5:{}", "a".repeat(32)),
                InvalidDigest(format!("md5:{}", "a".repeat(32))),
            ),
            ("nginx@".into(), InvalidDigest(String::new())),
            (
                format!("nginx@{SHA_A}@x"),
                InvalidDigest(format!("{SHA_A}@x")),
            ),
            ("nginx:".into(), InvalidTag(String::new())),
            ("nginx:-x".into(), InvalidTag("-x".into())),
            ("nginx:.x".into(), InvalidTag(".x".into())),
            (
                format!("nginx:{}", "t".repeat(129)),
                InvalidTag("t".repeat(129)),
            ),
            ("nginx:a+b".into(), InvalidTag("a+b".into())),
            (
                "docker.io//nginx".into(),
                InvalidPathComponent(String::new()),
            ),
            ("nginx/".into(), InvalidPathComponent(String::new())),
            (
                "docker.io/library/../evil".into(),
                InvalidPathComponent("..".into()),
            ),
            ("-nginx".into(), InvalidPathComponent("-nginx".into())),
            ("nginx-".into(), InvalidPathComponent("nginx-".into())),
            ("a___b".into(), InvalidPathComponent("a___b".into())),
            ("ngïnx".into(), InvalidPathComponent("ngïnx".into())),
            (
                "nginx:1.0:2.0".into(),
                InvalidPathComponent("nginx:1.0".into()),
            ),
            ("quay.io/jupyter/*".into(), InvalidPathComponent("*".into())),
            (format!("@{SHA_A}"), InvalidPathComponent(String::new())),
            (
                "exa_mple.com/x".into(),
                InvalidRegistry("exa_mple.com".into()),
            ),
            (
                "example.com:port/x".into(),
                InvalidRegistry("example.com:port".into()),
            ),
            (
                "example.com:/x".into(),
                InvalidRegistry("example.com:".into()),
            ),
            (
                "-example.com/x".into(),
                InvalidRegistry("-example.com".into()),
            ),
            ("[::1/x".into(), InvalidRegistry("[::1".into())),
            (format!("example.com/{}", "a".repeat(250)), TooLong),
        ];
        for (input, problem) in cases {
            let error = ImageRef::parse(&input).expect_err(&input);
            assert_eq!(error.problem, problem, "{input}");
            assert_eq!(error.input, input);
        }
    }

    #[test]
    fn errors_name_the_input_and_the_problem() {
        let error = ImageRef::parse("Nginx").unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"Nginx\" is not a valid image reference: the repository name must be lowercase"
        );
        let error = ImagePattern::parse("quay.io/Jupyter/*").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("\"quay.io/Jupyter/*\" is not a valid image pattern")
        );
    }

    #[test]
    fn normalises_patterns_like_references() {
        let cases = [
            ("*", "*"),
            ("nginx", "docker.io/library/nginx"),
            ("python:3.*", "docker.io/library/python:3.*"),
            ("docker.io/*", "docker.io/library/*"),
            ("docker.io/*/*", "docker.io/*/*"),
            (
                "index.docker.io/codercom/code-server:*",
                "docker.io/codercom/code-server",
            ),
            ("Quay.io/jupyter/*", "quay.io/jupyter/*"),
            ("ghcr.io/*", "ghcr.io/*"),
            ("*.gcr.io/p/*", "*.gcr.io/p/*"),
            ("localhost:5000/*", "localhost:5000/*"),
            ("ghcr.io/org/code-*", "ghcr.io/org/code-*"),
        ];
        for (input, expected) in cases {
            let pattern = ImagePattern::parse(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pattern.to_string(), expected, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_patterns() {
        let cases = [
            "",
            "quay.io/Jupyter/*",
            "nginx latest",
            "quay.io/jupyter/*@sha256:abc",
            "docker.io//x",
            "ghcr.io/org/*/",
            "nginx:",
            "nginx:-*",
            "ex ample.com/*",
        ];
        for input in cases {
            assert!(ImagePattern::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn matches_references_against_patterns() {
        let a = format!("@{SHA_A}");
        let b = format!("@{SHA_B}");
        let cases: Vec<(String, &str, bool)> = vec![
            // Tag wildcard: any tag or digest of exactly that repository.
            (
                "codercom/code-server:4.96.2".into(),
                "docker.io/codercom/code-server:*",
                true,
            ),
            (
                "codercom/code-server".into(),
                "docker.io/codercom/code-server:*",
                true,
            ),
            (
                format!("codercom/code-server{a}"),
                "docker.io/codercom/code-server:*",
                true,
            ),
            (
                "docker.io/codercom/code-server-evil:1".into(),
                "docker.io/codercom/code-server:*",
                false,
            ),
            (
                "docker.io/codercom/code-server/evil:1".into(),
                "docker.io/codercom/code-server:*",
                false,
            ),
            (
                "docker.io/codercom-evil/code-server:1".into(),
                "docker.io/codercom/code-server:*",
                false,
            ),
            (
                "ghcr.io/codercom/code-server:1".into(),
                "docker.io/codercom/code-server:*",
                false,
            ),
            (
                "codercom/code-server:4.96.2".into(),
                "codercom/code-server:4.*",
                true,
            ),
            (
                "codercom/code-server:3.12".into(),
                "codercom/code-server:4.*",
                false,
            ),
            // Trailing /*: any depth below, nothing beside.
            (
                "quay.io/jupyter/base-notebook:latest".into(),
                "quay.io/jupyter/*",
                true,
            ),
            ("quay.io/jupyter/a/b/c:1".into(), "quay.io/jupyter/*", true),
            (
                format!("quay.io/jupyter/scipy{a}"),
                "quay.io/jupyter/*",
                true,
            ),
            ("Quay.io/jupyter/x".into(), "quay.io/jupyter/*", true),
            ("quay.io/jupyter".into(), "quay.io/jupyter/*", false),
            ("quay.io/jupyterevil/x".into(), "quay.io/jupyter/*", false),
            (
                "quay.io.evil.com/jupyter/x".into(),
                "quay.io/jupyter/*",
                false,
            ),
            (
                "evil.com/quay.io/jupyter/x".into(),
                "quay.io/jupyter/*",
                false,
            ),
            ("quay.io:443/jupyter/x".into(), "quay.io/jupyter/*", false),
            ("evilquay.io/jupyter/x".into(), "quay.io/jupyter/*", false),
            ("ghcr.io/org/tool:1".into(), "ghcr.io/org/*", true),
            ("ghcr.io/org/team/tool:1".into(), "ghcr.io/org/*", true),
            ("ghcr.io/org-evil/tool".into(), "ghcr.io/org/*", false),
            ("ghcr.io/organization/tool".into(), "ghcr.io/org/*", false),
            ("ghcr.io/org".into(), "ghcr.io/org/*", false),
            ("nginx".into(), "docker.io/library/*", true),
            ("docker.io/library/a/b".into(), "docker.io/library/*", true),
            (
                "docker.io/library-evil/x".into(),
                "docker.io/library/*",
                false,
            ),
            ("docker.io/librar/x".into(), "docker.io/library/*", false),
            ("nginx".into(), "docker.io/*", true),
            ("codercom/code-server".into(), "docker.io/*", false),
            ("codercom/code-server".into(), "docker.io/*/*", true),
            (
                "quay.io/codercom/code-server".into(),
                "docker.io/*/*",
                false,
            ),
            (
                "localhost:5000/team/app:dev".into(),
                "localhost:5000/*",
                true,
            ),
            ("localhost:5001/team/app".into(), "localhost:5000/*", false),
            ("localhost/team/app".into(), "localhost:5000/*", false),
            // A bare name: that one official repository, any tag or digest.
            ("nginx".into(), "nginx", true),
            ("nginx:1.25".into(), "nginx", true),
            (format!("docker.io/library/nginx{a}"), "nginx", true),
            ("index.docker.io/library/nginx:1".into(), "nginx", true),
            ("docker.io/nginx".into(), "nginx", true),
            ("nginx-evil".into(), "nginx", false),
            ("evil/nginx".into(), "nginx", false),
            ("docker.io/library/nginx/evil".into(), "nginx", false),
            ("ghcr.io/nginx".into(), "nginx", false),
            ("localhost/nginx".into(), "nginx", false),
            // Everything.
            ("anything.example.com:8443/x/y:z".into(), "*", true),
            (format!("nginx{b}"), "*", true),
            // A tag glob: needs a matching tag; a digest alone cannot show one.
            (
                "docker.io/library/python:3.12".into(),
                "docker.io/library/python:3.*",
                true,
            ),
            ("python:3.12-slim".into(), "python:3.*", true),
            ("python:3".into(), "python:3.*", false),
            ("python:2.7".into(), "python:3.*", false),
            ("python".into(), "python:3.*", false),
            (format!("python{a}"), "python:3.*", false),
            (format!("python:3.12{a}"), "python:3.*", true),
            (
                "docker.io/library/python-evil:3.12".into(),
                "python:3.*",
                false,
            ),
            ("nginx:latest".into(), "nginx:latest", true),
            ("nginx".into(), "nginx:latest", true),
            ("nginx:latest-evil".into(), "nginx:latest", false),
            ("nginx:evil-latest".into(), "nginx:latest", false),
            // Segment wildcards stay within one segment.
            ("ghcr.io/org/x".into(), "ghcr.io/*/x", true),
            ("ghcr.io/org/sub/x".into(), "ghcr.io/*/x", false),
            ("ghcr.io/org/code-server".into(), "ghcr.io/org/code-*", true),
            (
                "ghcr.io/org/code/server".into(),
                "ghcr.io/org/code-*",
                false,
            ),
            (
                "ghcr.io/org/vscode-server".into(),
                "ghcr.io/org/code-*",
                false,
            ),
            // Registry wildcards stay within one DNS label.
            ("eu.gcr.io/p/x".into(), "*.gcr.io/p/*", true),
            ("evil.eu.gcr.io/p/x".into(), "*.gcr.io/p/*", false),
            ("gcr.io/p/x".into(), "*.gcr.io/p/*", false),
            ("eu.gcr.io:5000/p/x".into(), "*.gcr.io/p/*", false),
            // A pinned digest.
            (format!("nginx{a}"), NGINX_PINNED_A, true),
            (format!("nginx:1{a}"), NGINX_PINNED_A, true),
            (format!("nginx{b}"), NGINX_PINNED_A, false),
            ("nginx:latest".into(), NGINX_PINNED_A, false),
        ];
        assert!(cases.len() >= 20);
        for (reference, pattern, expected) in &cases {
            let image = ImageRef::parse(reference).unwrap_or_else(|e| panic!("{e}"));
            let pattern_value = ImagePattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                pattern_value.matches(&image),
                *expected,
                "{reference} against {pattern}"
            );
        }
    }

    #[test]
    fn glob_is_anchored_and_respects_boundaries() {
        assert!(glob("a*c", "abbc", &[]));
        assert!(glob("*", "", &[]));
        assert!(!glob("a*", "ba", &[]));
        assert!(!glob("*.io", "a.b.io", &['.']));
        assert!(glob("*.io", "ab.io", &['.']));
        assert!(!glob("abc", "abcd", &[]));
        let long = "a".repeat(500);
        assert!(!glob(&"*a".repeat(200), &format!("{long}b"), &[]));
    }
}
