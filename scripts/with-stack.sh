#!/usr/bin/env bash
# Runs a command against a GuildNet stack of its own: a local control plane in
# .guildnet/<name> (default e2e), the CRDs, the starter and e2e Capabilities, the operator and
# the admission webhook (each with its own identity), with KUBECONFIG, GUILDNET_BIN and
# GUILDNET_STACK_LOGS exported. Stops everything afterwards, whatever the outcome, and
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
"$bin/kubectl" apply -f webhook/config/starter-capabilities.yaml -f e2e/fixtures/capabilities.yaml >/dev/null

# Short intervals so reaping and debouncing are observable within a test's deadline. One
# replica, so no leader election; metrics on a free port, so stacks can run side by side.
KUBECONFIG=$dir/operator.kubeconfig RUST_LOG=info,kube=warn \
  "$target/guildnet-operator" --reap-interval 1s --crash-loop-restarts 3 \
  --leader-elect=false --metrics-listen 127.0.0.1:0 >"$logs/operator.log" 2>&1 &
pids+=($!)
# Free ports, so stacks (and `make dev`) can run side by side.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
webhook_port=$(free_port) webhook_metrics_port=$(free_port)
KUBECONFIG=$dir/webhook.kubeconfig RUST_LOG=info,kube=warn \
  "$target/guildnet-webhook" --listen 127.0.0.1:$webhook_port --metrics-listen 127.0.0.1:$webhook_metrics_port \
  --webhook-url https://127.0.0.1:$webhook_port >"$logs/webhook.log" 2>&1 &
pids+=($!)
# Serving (readyz) comes a moment before the webhook configurations are registered.
deadline=$((SECONDS + 60))
until curl -sf http://127.0.0.1:$webhook_metrics_port/readyz >/dev/null &&
  "$bin/kubectl" get validatingwebhookconfiguration guildnet-webhook >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "webhook not ready:"; tail -20 "$logs/webhook.log"; exit 1; }
  sleep 0.2
done

status=0
"$@" || status=$?
if [ $status -ne 0 ]; then
  for c in operator webhook; do
    echo "--- last $c log lines ($logs/$c.log)"; tail -30 "$logs/$c.log"
  done
fi
exit $status
