#!/usr/bin/env bash
# Runs a command against a GuildNet stack of its own: a local control plane in
# .guildnet/<name> (default e2e), the CRDs, and the operator, with KUBECONFIG, GUILDNET_BIN
# and GUILDNET_STACK_LOGS exported. Stops everything afterwards, whatever the outcome, and
# exits with the command's status.
#   GUILDNET_STACK=bench scripts/with-stack.sh cargo bench ...
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/.guildnet/${GUILDNET_STACK:-e2e}
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
export KUBECONFIG=$dir/kubeconfig GUILDNET_BIN=$bin GUILDNET_STACK_LOGS=$logs
scripts/install-crds.sh "$KUBECONFIG" >/dev/null

# Short intervals so reaping and debouncing are observable within a test's deadline.
RUST_LOG=info,kube=warn "$target/guildnet-operator" --reap-interval 1s --crash-loop-restarts 3 \
  >"$logs/operator.log" 2>&1 &
pids+=($!)

status=0
"$@" || status=$?
if [ $status -ne 0 ]; then
  echo "--- last operator log lines ($logs/operator.log)"; tail -40 "$logs/operator.log"
fi
exit $status
