#!/usr/bin/env bash
# Installs particle-usb 4.1.0 (the newest on the npm registry; its `usb`
# dependency ships linux-x64 prebuilds, so no compiler is needed) into a cache
# directory outside the repository and prints the path of its package
# directory.  Idempotent.  Called by scripts/install-deps, so that the interop
# tests find it installed before `meson test` runs; the tests never install.
#
#   FLASHD_PARTICLE_USB_DIR  install directory (default: $XDG_CACHE_HOME/flashd-test/
#                            particle-usb-4.1.0, or ~/.cache/..., or /var/cache/...)
set -euo pipefail

dir=${FLASHD_PARTICLE_USB_DIR:-}
if [ -z "$dir" ]; then
  base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  base=${base:-/var/cache}
  dir=$base/flashd-test/particle-usb-4.1.0
fi
pkg=$dir/node_modules/particle-usb
stamp=$dir/.installed

if [ -f "$stamp" ] && [ -d "$pkg" ]; then
  echo "$pkg"
  exit 0
fi
command -v npm >/dev/null || { echo "particle-usb-setup: npm not found" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"name": "flashd-particle-usb", "private": true, "version": "0.0.0"}' > package.json
npm install --no-audit --no-fund --loglevel=error particle-usb@4.1.0 >&2
[ -d "$pkg" ] || { echo "particle-usb-setup: $pkg missing after npm install" >&2; exit 1; }
touch "$stamp"
echo "$pkg"
