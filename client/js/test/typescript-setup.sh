#!/usr/bin/env bash
# Installs TypeScript and Node's type declarations (to type-check
# client/js/index.d.ts and a program that uses it) into a cache directory outside the repository and
# prints the path of its `tsc`.  Idempotent: a finished install is reused.
# scripts/install-deps runs it, so the type-check test finds it installed.
# Network: the npm registry, through npm itself.
#
#   FLASHD_TYPESCRIPT_DIR  install directory (default: $XDG_CACHE_HOME/flashd-test/
#                          typescript-5.6.3, or ~/.cache/..., or /var/cache/...)
set -euo pipefail

version=5.6.3
node_types=20.16.10
dir=${FLASHD_TYPESCRIPT_DIR:-}
if [ -z "$dir" ]; then
  base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  base=${base:-/var/cache}
  dir=$base/flashd-test/typescript-$version
fi
bin=$dir/node_modules/.bin/tsc
stamp=$dir/.installed

if [ -f "$stamp" ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v npm >/dev/null || { echo "typescript-setup: npm not found" >&2; exit 77; }
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"name":"flashd-typescript","private":true,"version":"0.0.0"}' > package.json
npm install --no-audit --no-fund --loglevel=error "typescript@$version" "@types/node@$node_types" >&2
[ -x "$bin" ] && [ -f node_modules/@types/node/index.d.ts ] || { echo "typescript-setup: $bin or @types/node missing after npm install" >&2; exit 1; }
touch "$stamp"
echo "$bin"
