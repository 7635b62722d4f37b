#!/usr/bin/env bash
# Runs the README's walk-through verbatim (its first sh block under "A five-minute
# walk-through"; one of its commands is refused on purpose, so it runs as a reader would,
# without stopping at a failure), then checks what it printed: the workspace Ready, the
# invalid one refused with its reason, the workspace placed on the second control plane
# recording it and answering from its pod there, the GuildDatabase Ready and a row written
# and read back through the database API, alice's request
# reaching the real code-server (302 to its login), bob's refused (403), and a password read
# from the generated Secret. Stops what it started with `make dev-down`. Part of `make e2e`;
# needs root (the pods' network namespace), as the walk-through's real IDE does. Refuses to
# run while `make dev` is up: it is the same stack.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.guildnet/dev
for pid in "$state"/*.pid; do
  if [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then
    echo "make dev is running (${pid}): the walk-through starts that stack itself; stop it with make dev-down" >&2
    exit 1
  fi
done

out=target/e2e-artifacts/walkthrough
mkdir -p "$out"
python3 - README.md >"$out/walkthrough.sh" <<'PY'
import sys
text = open(sys.argv[1]).read()
section = text.split("## A five-minute walk-through", 1)[1]
print(section.split("```sh\n", 1)[1].split("```", 1)[0])
PY

status=0
bash "$out/walkthrough.sh" >"$out/output.txt" 2>&1 || status=$?
fail() { echo "walk-through: $1 (the script: $out/walkthrough.sh, what it printed: $out/output.txt)" >&2; tail -30 "$out/output.txt" >&2; make -s dev-down >/dev/null 2>&1 || true; exit 1; }
[ $status -eq 0 ] || fail "it stopped with exit status $status"
grep -q 'condition met' "$out/output.txt" || fail "the workspace did not become Ready"
grep -q 'spec.ports\[0\].containerPort: Invalid value: 70000' "$out/output.txt" ||
  fail "the invalid workspace was not refused with its reason"
grep -q 'HTTP/1.1 403' "$out/output.txt" || fail "bob's request was not refused with 403"
grep -q 'guilddatabase.guildnet.io/app condition met' "$out/output.txt" || fail "the GuildDatabase did not become Ready"
grep -q '^user app: does not exist' "$out/output.txt" ||
  fail "the GuildDatabase's schema was not applied at reqlite up to its user (.guildnet/logs/databases.log)"
grep -q '"items":\[{"id":"a1","name":"anvil"}\]' "$out/output.txt" ||
  fail "the row inserted through the database API was not listed back"
# The workspace was just resumed: its code-server comes a moment later (the README says so).
deadline=$((SECONDS + 60))
until curl -sI -H "Authorization: Bearer $(cat .guildnet/tokens/alice)" http://127.0.0.1:8090/w/default/ide/ |
  grep -qi '^location: \./login'; do
  [ $SECONDS -lt $deadline ] || fail "alice's request did not reach code-server's login within 60 s (is make real-ides done? .guildnet/logs/ides.log)"
  sleep 0.5
done
# The workspace placed on the second control plane: its status here, its echo from its pod
# IP there (the proxy may take a moment to have its endpoint).
grep -Eq '^edge far-[0-9a-f]{8}$' "$out/output.txt" || fail "the placed workspace did not record the cluster edge"
deadline=$((SECONDS + 60))
until curl -s -H "Authorization: Bearer $(cat .guildnet/tokens/alice)" http://127.0.0.1:8090/w/default/far/hello |
  grep -q '"localAddr":"10\.245\.'; do
  [ $SECONDS -lt $deadline ] || fail "alice's request to the workspace on the edge did not reach its pod there within 60 s"
  sleep 0.5
done
make -s dev-down >/dev/null 2>&1 || true
# The password is the last line: 32 URL-safe characters.
tail -1 "$out/output.txt" | grep -Eq '^[A-Za-z0-9_-]{20,}$' || fail "no password was read from the Secret"
echo "walk-through: passed (README.md's commands, verbatim; output in $out/output.txt)"
