#!/usr/bin/env bash
# Prints the KWOK stages the local control plane runs with: upstream's fast node and pod
# lifecycles (from the pinned KWOK module) followed by GuildNet's own test stages.
set -euo pipefail
cd "$(dirname "$0")/../e2e/testcluster/kwok"
kwok_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
first=1
for f in "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml \
         "$kwok_dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         "$kwok_dir"/kustomize/stage/pod/fast/pod-*.yaml \
         stages/*.yaml; do
  [ -f "$f" ] || continue
  [ $first -eq 1 ] || echo "---"
  first=0
  sed '1{/^---$/d}' "$f"
done
