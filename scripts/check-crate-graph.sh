#!/usr/bin/env bash
# The crate graph docs/architecture.md draws: the webhook and the proxy depend on api and
# runtime, never on the operator (they would link and rebuild the controllers and the Lease
# elector). Fails, naming the crate, when that comes back.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in guildnet-webhook guildnet-proxy; do
  if cargo tree -q -p "$crate" --edges normal,build,dev --prefix none | grep -q '^guildnet-operator '; then
    echo "$crate depends on guildnet-operator: move what it needs to guildnet-api or guildnet-runtime"
    status=1
  fi
done
exit $status
