# syntax=docker/dockerfile:1
# One image with guildnet-operator, guildnet-webhook and guildnet-proxy in /usr/local/bin;
# each Deployment picks its binary with `command` (see charts/guildnet). Build it with
# `make image` (podman or docker; IMAGE=registry/name:tag to name it).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The caches only speed up rebuilds; the binaries are copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin guildnet-operator --bin guildnet-webhook --bin guildnet-proxy \
 && mkdir /out \
 && cp target/release/guildnet-operator target/release/guildnet-webhook target/release/guildnet-proxy /out/

# distroless/cc: glibc and libgcc for the binaries (TLS is rustls, no OpenSSL), no shell, no
# package manager. Debian 12 like the build stage, so the glibc versions match.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The `nonroot` user (uid 65532) that the chart's runAsUser names too.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/guildnet-operator"]
