#!/usr/bin/env bash
# Runs a command against a GuildNet stack of its own: a local control plane in
# .guildnet/<name> (default e2e), the CRDs, the starter and e2e Capabilities, the operator,
# the admission webhook and the proxy (each with its own identity), a test upstream on the pod
# IPs, with KUBECONFIG, GUILDNET_BIN, GUILDNET_STACK_LOGS and GUILDNET_PROXY_URL exported. Stops everything afterwards, whatever the outcome, and
# exits with the command's status.
#   GUILDNET_STACK=bench scripts/with-stack.sh cargo bench ...
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/.guildnet/${GUILDNET_STACK:-e2e}
bin=$root/.guildnet/bin
# GUILDNET_TARGET: the build to run (make bench uses target/release).
target=${GUILDNET_TARGET:-$root/target/debug}
logs=$dir/logs
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${GUILDNET_KEEP_LOGS:-}" ] && cp -r "$logs" "$GUILDNET_KEEP_LOGS" 2>/dev/null
  "$bin/kube" cluster down --dir "$dir" >/dev/null
}
trap cleanup EXIT

"$bin/kube" cluster up --dir "$dir" >/dev/null
export KUBECONFIG=$dir/kubeconfig GUILDNET_BIN=$bin GUILDNET_STACK_LOGS=$logs GUILDNET_TARGET=$target
scripts/install-crds.sh "$KUBECONFIG" >/dev/null
scripts/install-rbac.sh "$KUBECONFIG"
"$bin/kubectl" apply -f webhook/config/starter-capabilities.yaml -f e2e/fixtures/capabilities.yaml >/dev/null

# Short intervals so reaping and debouncing are observable within a test's deadline. One
# replica, so no leader election; metrics on a free port, so stacks can run side by side.
KUBECONFIG=$dir/operator.kubeconfig RUST_LOG=info,kube=warn \
  "$target/guildnet-operator" --reap-interval 1s --crash-loop-restarts 3 --name-conflict-recheck 2s \
  --leader-elect=false --metrics-listen 127.0.0.1:0 >"$logs/operator.log" 2>&1 &
pids+=($!)
# Free ports, so stacks (and `make dev`) can run side by side.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
webhook_port=$(free_port) webhook_metrics_port=$(free_port)
KUBECONFIG=$dir/webhook.kubeconfig RUST_LOG=info,kube=warn \
  "$target/guildnet-webhook" --listen 127.0.0.1:$webhook_port --metrics-listen 127.0.0.1:$webhook_metrics_port \
  --webhook-url https://127.0.0.1:$webhook_port --client-ca-file "$dir/pki/webhook-client-ca.crt" \
  >"$logs/webhook.log" 2>&1 &
pids+=($!)
# Served to the API server alone: it presents the webhook client certificate the control
# plane made (tests check that nobody else gets an answer).
export GUILDNET_WEBHOOK_URL=https://127.0.0.1:$webhook_port
# Serving (readyz) comes a moment before the webhook configurations are registered.
deadline=$((SECONDS + 60))
until curl -sf http://127.0.0.1:$webhook_metrics_port/readyz >/dev/null &&
  "$bin/kubectl" get validatingwebhookconfiguration guildnet-webhook >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "webhook not ready:"; tail -20 "$logs/webhook.log"; exit 1; }
  sleep 0.2
done

# Test upstream: KWOK's pods are fakes, so give their IPs real listeners. upstream-netns.sh
# makes every pod IP local to a network namespace shared by all stacks (and left up), where
# this stack runs its own test-upstream; SO_REUSEPORT lets the copies share the port. Needs
# root for `ip netns`: without it, tests that talk to pods fail saying so.
upstream_port=8080
if [ "$(id -u)" -eq 0 ] && scripts/upstream-netns.sh up >"$logs/upstream.log" 2>&1; then
  ip netns exec guildnet-pods "$target/test-upstream" --listen 0.0.0.0:$upstream_port \
    >>"$logs/upstream.log" 2>&1 &
  pids+=($!)
  deadline=$((SECONDS + 10))
  until grep -q '^listening on' "$logs/upstream.log"; do
    [ $SECONDS -lt $deadline ] || { echo "test upstream not listening:"; tail -20 "$logs/upstream.log"; exit 1; }
    sleep 0.1
  done
  export GUILDNET_UPSTREAM_PORT=$upstream_port
else
  echo "no test upstream on the pod IPs (needs root; $logs/upstream.log)" >&2
fi

# The proxy, with short intervals and timeouts so activity writes, slow clients and slow
# workspaces are observable within a test's deadline; subdomain mode on a test domain.
# --upstream-timeout is 3 s so the test upstream's /slow gets its 504 quickly (proxy.rs). A
# real app is slower than that to start answering (code-server's login to workbench took
# 5-22 s under load): a stack serving real IDEs sets GUILDNET_UPSTREAM_TIMEOUT=60s, the
# proxy's default, which `make dev` (scripts/dev.sh) keeps.
upstream_timeout=${GUILDNET_UPSTREAM_TIMEOUT:-3s}
proxy_port=$(free_port)
KUBECONFIG=$dir/proxy.kubeconfig RUST_LOG=info,kube=warn \
  "$target/guildnet-proxy" --listen 127.0.0.1:$proxy_port --session-secret guildnet-proxy-session \
  --session-secret-namespace guildnet-system \
  --activity-interval 1s --header-read-timeout 2s --upstream-timeout "$upstream_timeout" --connect-timeout 2s \
  --base-domain ws.guildnet.test >"$logs/proxy.log" 2>&1 &
pids+=($!)
export GUILDNET_PROXY_URL=http://127.0.0.1:$proxy_port GUILDNET_PROXY_PID=$!
deadline=$((SECONDS + 60))
until curl -sf "$GUILDNET_PROXY_URL/readyz" >/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "proxy not ready:"; tail -20 "$logs/proxy.log"; exit 1; }
  sleep 0.2
done

status=0
"$@" || status=$?
if [ $status -ne 0 ]; then
  for c in operator webhook proxy; do
    echo "--- last $c log lines ($logs/$c.log)"; tail -30 "$logs/$c.log"
  done
fi
exit $status
