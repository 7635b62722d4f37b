#!/usr/bin/env bash
# Installs what `make dev` and `make test` need and a fresh machine may lack. Idempotent:
# on a machine that has everything it only checks. Go modules and crates are fetched by
# `go build` and `cargo` themselves.
set -euo pipefail

need_apt=()
# Extra commands a caller needs, each from the Debian package of its name (make bench: wrk nginx).
for extra in "$@"; do command -v "$extra" >/dev/null || need_apt+=("$extra"); done
command -v curl >/dev/null || need_apt+=(curl)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ip >/dev/null || need_apt+=(iproute2)
# make real-ides (part of make test): code-server's native modules are built with node-gyp,
# JupyterLab goes into a venv, and VS Code's search runs Debian's ripgrep.
command -v g++ >/dev/null || need_apt+=(g++)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v rg >/dev/null || need_apt+=(ripgrep)
# The dashboard's browser test drives Debian's Chromium; nothing downloads a browser.
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

command -v go >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/doc/install)"; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 26 ] || { echo "Go 1.26 or newer is required, found $(go env GOVERSION)"; exit 1; }

command -v cargo >/dev/null || { echo "Rust (cargo) is required (https://rustup.rs)"; exit 1; }
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null && rustup component add "$c" || { echo "cargo $c is required"; exit 1; }
  fi
done

command -v node >/dev/null && command -v npm >/dev/null || { echo "Node.js 20 or newer with npm is required (https://nodejs.org)"; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "Node.js 20 or newer is required, found $(node --version)"; exit 1; }
# playwright-core for the browser test, exactly as e2e/browser/package-lock.json pins it.
browser=$(dirname "$0")/../e2e/browser
if [ ! -d "$browser/node_modules" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  echo "installing the browser test's npm packages (e2e/browser)"
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
# reqlite, the ReQL server the GuildDatabase tests and make dev serve at database pod IPs.
reqlite=$(dirname "$0")/../e2e/reqlite
if [ ! -d "$reqlite/node_modules" ] || [ "$reqlite/package-lock.json" -nt "$reqlite/node_modules/.package-lock.json" ]; then
  echo "installing reqlite (e2e/reqlite)"
  (cd "$reqlite" && npm ci --no-audit --no-fund --loglevel=error)
fi
