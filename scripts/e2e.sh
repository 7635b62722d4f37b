#!/usr/bin/env bash
# The end-to-end tests, on a stack of their own (see with-stack.sh). Extra arguments go to
# cargo test, e.g. `scripts/e2e.sh --test workspace -- idle`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUST_TEST_THREADS=${RUST_TEST_THREADS:-4} exec scripts/with-stack.sh cargo test -p guildnet-e2e --no-fail-fast "$@"
