#!/usr/bin/env bash
# Runs the end-to-end tests: starts a control plane of their own (.guildnet/e2e), installs
# the CRDs, starts GuildNet's components against it, runs `cargo test -p guildnet-e2e`, and
# stops everything, whatever the outcome. Extra arguments go to cargo test, e.g.
# `scripts/e2e.sh --test workspace -- idle`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/.guildnet/e2e
bin=$root/.guildnet/bin
target=$root/target/debug
logs=$dir/logs
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$bin/kube" cluster down --dir "$dir" >/dev/null
}
trap cleanup EXIT

"$bin/kube" cluster up --dir "$dir" >/dev/null
export KUBECONFIG=$dir/kubeconfig GUILDNET_BIN=$bin GUILDNET_E2E_LOGS=$logs
scripts/install-crds.sh "$KUBECONFIG" >/dev/null

# Short intervals so reaping and debouncing are observable within a test's deadline.
RUST_LOG=info,kube=warn "$target/guildnet-operator" --reap-interval 1s --crash-loop-restarts 3 \
  >"$logs/operator.log" 2>&1 &
pids+=($!)

status=0
RUST_TEST_THREADS=${RUST_TEST_THREADS:-4} cargo test -p guildnet-e2e --no-fail-fast "$@" || status=$?
if [ $status -ne 0 ]; then
  echo "--- last operator log lines ($logs/operator.log)"; tail -40 "$logs/operator.log"
fi
exit $status
