#!/usr/bin/env bash
# Installs (or updates) the guildnet.io CRDs with server-side apply and waits until the API
# server serves them. Usage: scripts/install-crds.sh KUBECONFIG
set -euo pipefail
cd "$(dirname "$0")/.."
kubectl=".guildnet/bin/kubectl"
"$kubectl" --kubeconfig "$1" apply --server-side --field-manager=guildnet-install -f crds/
"$kubectl" --kubeconfig "$1" wait --for=condition=Established --timeout=60s \
  crd/workspaces.guildnet.io crd/capabilities.guildnet.io crd/quotas.guildnet.io \
  crd/guilddatabases.guildnet.io crd/clusterregistrations.guildnet.io
