#!/usr/bin/env bash
# `make bench`: runs every benchmark and writes docs/benchmarks.md with the machine and date.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
tmp=$(mktemp)
# A failed run keeps what it measured until then: a benchmark run takes most of an hour.
trap 'echo "make bench failed; the sections it finished are in $tmp" >&2' EXIT

# The proxy benchmark's load tool and the reverse proxy it is compared with.
scripts/install-deps.sh wrk nginx >/dev/null
# configurable-http-proxy (JupyterHub's proxy), the other one it is compared with, exactly as
# e2e/chp/package-lock.json pins it; installed once, again only when the lock changes.
chp=e2e/chp
if [ ! -d "$chp/node_modules" ] || [ "$chp/package-lock.json" -nt "$chp/node_modules/.package-lock.json" ]; then
  echo "installing configurable-http-proxy (e2e/chp)"
  (cd "$chp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB memory, $(uname -sr)."
  echo "Numbers from one run on this machine; rerun \`make bench\` to reproduce."
  echo
  echo "## Workspace controller"
  echo
  cargo bench -q -p guildnet-operator --bench reaper_scan
  # Starts a control plane and two operator replicas of its own: the release build, as
  # deployed.
  cargo build -q --release -p guildnet-operator
  GUILDNET_TARGET=$PWD/target/release GUILDNET_BIN=$PWD/.guildnet/bin \
    cargo bench -q -p guildnet-e2e --bench load
  echo "## Registered clusters"
  echo
  cargo bench -q -p guildnet-api --bench placement
  # Starts a hub and an edge control plane and the operator (the release build) of its own.
  GUILDNET_TARGET=$PWD/target/release GUILDNET_BIN=$PWD/.guildnet/bin \
    cargo bench -q -p guildnet-e2e --bench hung_cluster
  echo "## Operator runtime"
  echo
  cargo bench -q -p guildnet-operator --bench metrics_scrape
  # Starts a control plane and operator replicas of its own.
  GUILDNET_BIN=$PWD/.guildnet/bin cargo bench -q -p guildnet-e2e --bench failover
  echo "## Admission webhook"
  echo
  # Starts a control plane and a webhook of its own: the release build, as deployed.
  cargo build -q --release -p guildnet-webhook
  GUILDNET_BIN=$PWD/.guildnet/bin cargo bench -q -p guildnet-e2e --bench webhook
  cargo bench -q -p guildnet-webhook --bench handler
  echo "## Proxy"
  echo
  # A stack running release builds, as deployed; wrk against the proxy, nginx,
  # configurable-http-proxy and the pod.
  cargo build -q --release --workspace --bins
  GUILDNET_TARGET=$PWD/target/release GUILDNET_STACK=bench scripts/with-stack.sh \
    cargo bench -q -p guildnet-e2e --bench proxy
  # Event visibility: one authorisation per workspace, concurrently, streamed as decided.
  cargo bench -q -p guildnet-proxy --bench events
  # The database API: a control plane, operator and proxy (release builds) of its own, and
  # reqlite at the database's pod IP (the pods' network namespace: root).
  scripts/upstream-netns.sh up >/dev/null
  GUILDNET_TARGET=$PWD/target/release GUILDNET_BIN=$PWD/.guildnet/bin \
    cargo bench -q -p guildnet-e2e --bench database
  # `make fuzz` writes its own section; keep it.
  if [ -f "$out" ]; then sed -n '/^## Fuzzing$/,$p' "$out"; fi
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
