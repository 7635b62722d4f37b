#!/usr/bin/env bash
# `make fuzz`: the property tests over untrusted input (tests/fuzz.rs of api, webhook and
# proxy: AdmissionReviews and policy decisions, quantities, images, names, routes, header
# rewrites, cookies, redirects) with many cases each, each target bounded in time; then
# replaces the "Fuzzing" section of docs/benchmarks.md with what ran and what was found.
# FUZZ_CASES (default 100000) cases per property, FUZZ_SECONDS (default 600) per target.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${FUZZ_CASES:-100000}
seconds=${FUZZ_SECONDS:-600}
out=docs/benchmarks.md
section=$(mktemp)
log=$(mktemp)
trap 'rm -f "$section" "$log"' EXIT
status=0
{
  echo "## Fuzzing"
  echo
  echo "Written by \`make fuzz\` on $(date -u +%Y-%m-%d) ($(nproc) cores): property tests (proptest) over untrusted input, \`PROPTEST_CASES=$cases\` per property, at most ${seconds} s per target (\`make test\` runs 256 per property). A finding becomes a unit test named after it; the findings so far:"
  echo
  echo "- \`guildnet-api\` \`quantities_parse_exactly_or_are_refused\`: \`100000000000000000.1Ei\` parsed, but its milli-unit form could not be read back; quantities above Kubernetes' 2^63 - 1 are now refused (unit test \`reports_overflow_instead_of_wrapping\`)."
  echo
  echo "| target | properties | cases each | time | result |"
  echo "|---|---|---|---|---|"
} > "$section"
for crate in guildnet-api guildnet-webhook guildnet-proxy; do
  dir=${crate#guildnet-}
  [ -f "$dir/tests/fuzz.rs" ] || continue
  cargo test -q -p "$crate" --test fuzz --no-run >/dev/null
  start=$SECONDS
  if PROPTEST_CASES=$cases timeout "$seconds" cargo test -q -p "$crate" --test fuzz >"$log" 2>&1; then
    result="no failure"
  else
    result="**failed** (see below)"
    status=1
  fi
  properties=$(grep -Eo '[0-9]+ passed' "$log" | tail -1 | cut -d' ' -f1)
  echo "| \`$crate\` | ${properties:-?} | $cases | $((SECONDS - start)) s | $result |" >> "$section"
  if [ "$status" -ne 0 ]; then
    { echo; echo '```'; grep -E 'minimal failing input|panicked|Test failed' "$log" | head -20; echo '```'; } >> "$section"
  fi
done
echo >> "$section"
# Keep every other section; the Fuzzing one is replaced (or appended).
python3 - "$out" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
match = re.search(r"^## Fuzzing\n.*?(?=^## |\Z)", text, flags=re.M | re.S)
text = text[:match.start()] + section + text[match.end():] if match else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
cat "$section"
exit $status
