#!/usr/bin/env bash
# Runs GuildNet on the local control plane (or on the cluster named by GUILDNET_KUBECONFIG):
#   dev.sh run   in the foreground; Ctrl-C stops everything it started
#   dev.sh up    in the background; logs in .guildnet/logs/
#   dev.sh down  stops what `up` started
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.guildnet/dev
logs=$root/.guildnet/logs
bin=$root/.guildnet/bin
target=$root/target/debug
proxy_addr=${GUILDNET_PROXY_ADDR:-127.0.0.1:8090}
mkdir -p "$state" "$logs"

start_cluster() {
  if [ -n "${GUILDNET_KUBECONFIG:-}" ]; then
    kubeconfig=$GUILDNET_KUBECONFIG
  else
    # Stop on the way out only a control plane this script started.
    if ! { [ -f "$root/.guildnet/cluster.ready" ] && kill -0 "$(cat "$root/.guildnet/cluster.pid" 2>/dev/null)" 2>/dev/null; }; then
      touch "$state/started-cluster"
    fi
    "$bin/kube" cluster up --dir "$root/.guildnet" >/dev/null
    kubeconfig=$root/.guildnet/kubeconfig
  fi
  echo "$kubeconfig" > "$state/kubeconfig"
  scripts/install-crds.sh "$kubeconfig" >/dev/null
  # The components run as their own identities there, with the chart's rights.
  [ -n "${GUILDNET_KUBECONFIG:-}" ] || scripts/install-rbac.sh "$kubeconfig"
  "$bin/kubectl" --kubeconfig "$kubeconfig" get namespace guildnet-system >/dev/null 2>&1 ||
    "$bin/kubectl" --kubeconfig "$kubeconfig" create namespace guildnet-system >/dev/null
  "$bin/kubectl" --kubeconfig "$kubeconfig" apply -f webhook/config/starter-capabilities.yaml >/dev/null
  [ -n "${GUILDNET_KUBECONFIG:-}" ] || start_edge
}

# A second local control plane in .guildnet/edge (its own ports, its pods in
# 10.245.0.0/16), registered as the cluster "edge": workspaces placed there run in it and
# are opened through the same proxy. Users of guildnet:users may place workspaces there.
start_edge() {
  local edge=$root/.guildnet/edge
  if ! { [ -f "$edge/cluster.ready" ] && kill -0 "$(cat "$edge/cluster.pid" 2>/dev/null)" 2>/dev/null; }; then
    touch "$state/started-edge"
  fi
  "$bin/kube" cluster up --dir "$edge" --pod-cidr 10.245.0.0/16 >/dev/null
  local there=("$bin/kubectl" --kubeconfig "$edge/kubeconfig")
  "${there[@]}" get namespace guildnet-workspaces >/dev/null 2>&1 ||
    "${there[@]}" create namespace guildnet-workspaces >/dev/null
  local here=("$bin/kubectl" --kubeconfig "$kubeconfig")
  "${here[@]}" -n guildnet-system create secret generic edge-kubeconfig \
    --from-file=kubeconfig="$edge/kubeconfig" --dry-run=client -o yaml | "${here[@]}" apply -f - >/dev/null
  "${here[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: guildnet.io/v1alpha1
kind: ClusterRegistration
metadata: {name: edge, labels: {region: local}}
spec:
  kubeconfigSecretRef: {namespace: guildnet-system, name: edge-kubeconfig}
---
apiVersion: guildnet.io/v1alpha1
kind: Capabilities
metadata: {name: dev-edge}
spec:
  subjects: [{kind: Group, name: "guildnet:users"}]
  clusters: [edge]
YAML
}

# The kubeconfig a component runs with: its own identity on the local control plane, the
# given kubeconfig otherwise.
component_kubeconfig() {
  if [ -z "${GUILDNET_KUBECONFIG:-}" ] && [ -f "$root/.guildnet/$1.kubeconfig" ]; then
    echo "$root/.guildnet/$1.kubeconfig"
  else
    echo "$kubeconfig"
  fi
}

start_components() {
  for c in operator webhook proxy; do
    args=()
    [ "$c" = proxy ] && args=(--listen "$proxy_addr" --session-secret guildnet-proxy-session
      --session-secret-namespace guildnet-system)
    [ "$c" = webhook ] && args=(--webhook-url https://127.0.0.1:9443)
    # On the local control plane only the API server (its webhook client certificate) may
    # call the webhook, as in production.
    [ "$c" = webhook ] && [ -z "${GUILDNET_KUBECONFIG:-}" ] &&
      args+=(--client-ca-file "$root/.guildnet/pki/webhook-client-ca.crt")
    KUBECONFIG=$(component_kubeconfig $c) "$target/guildnet-$c" "${args[@]}" >"$logs/$c.log" 2>&1 &
    echo $! > "$state/$c.pid"
  done
  # On the local control plane the pods are KWOK's fakes: as root, give their IPs the test
  # upstream (an HTTP/WebSocket echo) so "open" in the dashboard shows something.
  if [ -z "${GUILDNET_KUBECONFIG:-}" ] && [ "$(id -u)" -eq 0 ] &&
    scripts/upstream-netns.sh up >"$logs/upstream.log" 2>&1; then
    ip netns exec guildnet-pods "$target/test-upstream" --listen 0.0.0.0:8080 --no-keep-alive >>"$logs/upstream.log" 2>&1 &
    echo $! > "$state/upstream.pid"
    # With `make real-ides` done, code-server (and Jupyter) workspaces run the real IDE at
    # their pod IP instead: opening one shows VS Code.
    if [ -e .guildnet/ides/code-server ] || [ -e .guildnet/ides/jupyterlab ]; then
      KUBECONFIG=$kubeconfig "$target/dev-ides" >"$logs/ides.log" 2>&1 &
      echo $! > "$state/ides.pid"
    fi
    # GuildDatabase servers get reqlite (a ReQL server, docs/databases.md) at their pod IP,
    # with their admin password, so the declared schema is applied there.
    KUBECONFIG=$kubeconfig "$target/dev-databases" >"$logs/databases.log" 2>&1 &
    echo $! > "$state/databases.pid"
  fi
  # Fail fast when a component cannot start (bad kubeconfig, port taken).
  sleep 1
  for c in operator webhook proxy; do
    if ! kill -0 "$(cat "$state/$c.pid")" 2>/dev/null; then
      echo "guildnet-$c failed to start:"; tail -20 "$logs/$c.log"; stop; exit 1
    fi
  done
  cat <<TXT
GuildNet is running.
  export KUBECONFIG=$kubeconfig
  dashboard: http://$proxy_addr/
  logs:      $logs/
TXT
  if [ -z "${GUILDNET_KUBECONFIG:-}" ]; then
    echo "  log in as alice with the token in $root/.guildnet/tokens/alice (bob, admin: same place)"
    echo "  a second control plane is registered as cluster \"edge\" (spec.placement.cluster: edge); its KUBECONFIG: $root/.guildnet/edge/kubeconfig"
    if [ -f "$state/ides.pid" ]; then
      echo "  real IDEs: code-server workspaces run code-server (its password: the workspace's <name>-password Secret); log in $logs/ides.log"
    elif [ "$(id -u)" -eq 0 ]; then
      echo "  workspaces answer with a test echo; \`make real-ides\` once, and code-server workspaces run the real VS Code"
    fi
  fi
}

stop() {
  for c in databases ides upstream proxy webhook operator; do
    if [ -f "$state/$c.pid" ]; then
      pid=$(cat "$state/$c.pid")
      kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      rm -f "$state/$c.pid"
    fi
  done
  if [ -f "$state/started-edge" ]; then
    "$bin/kube" cluster down --dir "$root/.guildnet/edge" >/dev/null
    rm -f "$state/started-edge"
  fi
  if [ -f "$state/started-cluster" ]; then
    "$bin/kube" cluster down --dir "$root/.guildnet" >/dev/null
    rm -f "$state/started-cluster"
  fi
  rm -f "$state/kubeconfig"
}

case "${1:-}" in
  run)
    start_cluster
    trap 'echo; echo "stopping GuildNet"; stop; exit 0' INT TERM
    start_components
    echo "Press Ctrl-C to stop."
    wait
    ;;
  up)
    start_cluster
    start_components
    echo "Stop it with: make dev-down"
    ;;
  down)
    stop
    echo "GuildNet stopped."
    ;;
  *)
    echo "usage: $0 run|up|down" >&2; exit 2 ;;
esac
