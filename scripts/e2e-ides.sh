#!/usr/bin/env bash
# The real-IDE end-to-end tests (e2e/tests/ides.rs), on a stack of their own whose proxy
# waits for a workspace as long as in production (60 s; the main e2e stack gives up after
# 3 s for its own tests). Installs the IDEs first (`make real-ides`: once per pins). Extra
# arguments go to cargo test, e.g. `scripts/e2e-ides.sh -- jupyterlab`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-ides.sh
# One IDE at a time: each is a real program on a 2-core machine beside the control plane.
GUILDNET_STACK=${GUILDNET_STACK:-e2e-ides} GUILDNET_UPSTREAM_TIMEOUT=60s RUST_TEST_THREADS=1 \
  exec scripts/with-stack.sh cargo test -p guildnet-e2e --features real-ides --test ides "$@"
