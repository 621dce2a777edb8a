#!/usr/bin/env bash
# Installs particle-cli 3.43.1 (the newest release that installs from the npm
# registry: 3.51.0 needs binary-version-reader 4.x, which the registry lacks)
# with execa 5.1.1 beside it (its `flash` needs it at run time but lists it only
# as a development dependency) into a cache directory outside the repository,
# and prints the path of its `particle` executable.  Idempotent.  Called by
# scripts/install-deps, so that the interop tests find it before `meson test`
# runs; the tests never install.  Its particle-usb is 4.1.0.
#
#   FLASHD_PARTICLE_CLI_343_DIR  install directory (default: $XDG_CACHE_HOME/flashd-test/
#                                particle-cli-3.43.1, or ~/.cache/..., or /var/cache/...)
set -euo pipefail

dir=${FLASHD_PARTICLE_CLI_343_DIR:-}
if [ -z "$dir" ]; then
  base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  base=${base:-/var/cache}
  dir=$base/flashd-test/particle-cli-3.43.1
fi
bin=$dir/node_modules/.bin/particle
stamp=$dir/.installed

if [ -f "$stamp" ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v npm >/dev/null || { echo "particle-cli-3.43-setup: npm not found" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"name": "flashd-particle-cli-3-43", "private": true, "version": "0.0.0"}' > package.json
npm install --no-audit --no-fund --loglevel=error particle-cli@3.43.1 execa@5.1.1 >&2
[ -x "$bin" ] || { echo "particle-cli-3.43-setup: $bin missing after npm install" >&2; exit 1; }
touch "$stamp"
echo "$bin"
