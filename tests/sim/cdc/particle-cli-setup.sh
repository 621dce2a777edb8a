#!/usr/bin/env bash
# Install particle-cli 3.19.0 (the last release with `flash --serial`, i.e.
# YMODEM; docs/testing/umockdev.md#particle-cli) into a cache directory outside the repository and
# print the path of its `particle` executable.  Idempotent: a finished install
# is reused.  scripts/install-deps runs it, so the tests find it installed.
# Network: the npm registry, through npm itself.
#
#   FLASHD_PARTICLE_CLI_DIR  install directory (default: $XDG_CACHE_HOME/flashd-test/
#                            particle-cli-3.19.0, or ~/.cache/..., or /var/cache/...)
set -euo pipefail

dir=${FLASHD_PARTICLE_CLI_DIR:-}
if [ -z "$dir" ]; then
  base=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
  base=${base:-/var/cache}
  dir=$base/flashd-test/particle-cli-3.19.0
fi
bin=$dir/node_modules/.bin/particle
stamp=$dir/.installed

if [ -f "$stamp" ] && [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v npm >/dev/null || { echo "particle-cli-setup: npm not found" >&2; exit 77; }
mkdir -p "$dir"
cd "$dir"
# particle-cli 3.19.0's dependency tree no longer resolves as published:
# pin what broke (request, particle-api-js' form-data/stream-http, the
# device-constants its serial code reads).
cat > package.json <<'EOF'
{
  "name": "flashd-particle-cli-3-19",
  "private": true,
  "version": "0.0.0",
  "overrides": {
    "request": "2.88.2",
    "particle-api-js": {
      "form-data": "1.0.0-rc4",
      "stream-http": "2.2.1"
    },
    "@particle/device-constants": "3.5.0"
  }
}
EOF
{
  npm install --no-audit --no-fund --loglevel=error particle-cli@3.19.0
  npm install --no-audit --no-fund --loglevel=error particle-usb@2.10.1 --no-save
} >&2
[ -x "$bin" ] || { echo "particle-cli-setup: $bin missing after npm install" >&2; exit 1; }
touch "$stamp"
echo "$bin"
