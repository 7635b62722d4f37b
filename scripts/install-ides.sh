#!/usr/bin/env bash
# `make real-ides`: installs the real IDEs that run behind the proxy into .guildnet/ides:
# code-server exactly as e2e/ides/code-server/package-lock.json pins it, and JupyterLab in a
# venv exactly as e2e/ides/jupyterlab/requirements.txt pins it. Each install is keyed by its
# pins, this script, the Node.js or Python version and the machine, so it is made once (a
# cold code-server install builds native modules for minutes) and again only when one of
# those changes. Prints where each one is.
#   scripts/install-ides.sh            # both
#   scripts/install-ides.sh code-server
set -euo pipefail
cd "$(dirname "$0")/.."
ides=.guildnet/ides
arch=$(uname -m)
mkdir -p "$ides"

# A key for an install: the files it comes from, and the runtime it runs on.
key() { cat "$@" scripts/install-ides.sh | sha256sum | cut -c1-12; }

# Points $ides/<name> at the install `dir` and removes the installs of other keys.
use() {
  local name=$1 dir=$2
  ln -sfn "$(basename "$dir")" "$ides/$name"
  find "$ides" -mindepth 1 -maxdepth 1 -type d -name "$name-*" ! -name "$(basename "$dir")" \
    -exec rm -rf {} +
}

code_server() {
  local pins=e2e/ides/code-server
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" != 20 ]; then
    echo "code-server 4.100.3 installs only on Node.js 20 (its postinstall checks), found $(node --version)" >&2
    exit 1
  fi
  local dir=$ides/code-server-$(key "$pins/package-lock.json")-node$node_major-$arch
  if [ ! -f "$dir/.installed" ]; then
    echo "installing code-server into $dir (a few minutes: native modules are built)" >&2
    # Native modules are built against the installed Node.js's headers: nothing is fetched
    # from nodejs.org.
    local nodedir gyp
    nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
    if [ ! -f "$nodedir/include/node/node.h" ]; then
      echo "Node.js headers are missing from $nodedir/include/node: install them (Debian: libnode-dev)" >&2
      exit 1
    fi
    gyp=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
    command -v rg >/dev/null || { echo "ripgrep is missing: run scripts/install-deps.sh" >&2; exit 1; }
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$pins/package.json" "$pins/package-lock.json" "$dir/"
    (
      cd "$dir"
      local npm_quiet=(--no-audit --no-fund --loglevel=error)
      # Without scripts: as root, code-server's postinstall stops unless npm runs with
      # unsafe-perm, and its dependencies' scripts download prebuilt binaries (kerberos,
      # ripgrep) from outside the package registry. What the postinstall does is done here.
      npm ci --ignore-scripts "${npm_quiet[@]}" >/dev/null
      npm rebuild argon2 --build-from-source --nodedir="$nodedir" --loglevel=error >/dev/null
      cd node_modules/code-server/lib/vscode
      # VS Code's own dependencies, as its npm-shrinkwrap.json pins them (`npm install`: the
      # shipped shrinkwrap lacks an entry `npm ci` insists on), and the native modules the
      # server loads. kerberos (proxy authentication) is left unbuilt.
      npm install --omit=dev --ignore-scripts "${npm_quiet[@]}" >/dev/null
      for module in node-pty @vscode/spdlog native-watchdog @vscode/deviceid; do
        (cd "node_modules/$module" && node "$gyp" rebuild --nodedir="$nodedir" --loglevel=error >/dev/null)
      done
      # Search runs the machine's ripgrep (Debian's) where VS Code expects its own.
      mkdir -p node_modules/@vscode/ripgrep/bin
      ln -sfn "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
      ln -sfn node_modules node_modules.asar
      (cd bin/remote-cli && ln -sfn code-linux.sh code-server)
      (cd bin/helpers && ln -sfn browser-linux.sh browser.sh)
      cd extensions
      npm install --omit=dev --ignore-scripts "${npm_quiet[@]}" >/dev/null
    )
    "$dir/node_modules/.bin/code-server" --version >/dev/null
    touch "$dir/.installed"
  fi
  use code-server "$dir"
  echo "code-server: $ides/code-server/node_modules/.bin/code-server"
}

jupyterlab() {
  local pins=e2e/ides/jupyterlab/requirements.txt
  local python_version
  python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  local dir=$ides/jupyterlab-$(key "$pins")-py$python_version-$arch
  if [ ! -f "$dir/.installed" ]; then
    echo "installing JupyterLab into $dir" >&2
    rm -rf "$dir"
    # A venv's scripts name its path: it is made where it stays.
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check --no-deps -r "$pins"
    "$dir/bin/jupyter-lab" --version >/dev/null
    touch "$dir/.installed"
  fi
  use jupyterlab "$dir"
  echo "jupyterlab: $ides/jupyterlab/bin/jupyter-lab"
}

case "${1:-all}" in
  code-server) code_server ;;
  jupyterlab) jupyterlab ;;
  all) code_server; jupyterlab ;;
  *) echo "usage: $0 [code-server|jupyterlab]" >&2; exit 2 ;;
esac
