#!/usr/bin/env bash
# Build the web app that `pulse web` serves at /app: spa/ → spa/dist (npm ci, npm run build).
# Re-running is cheap: npm ci only when package-lock.json changed, the build only when a source is newer than
# spa/dist. `scripts/spa.sh test` also runs the component tests (vitest).
# Needs Node.js >= 20 and npm; installs Debian's nodejs and npm when they are missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/../spa"
mode="${1:-build}"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "the web app needs Node.js >= 20 and npm (install them, or run as root to let this script do it)" >&2
    exit 1
  fi
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "the web app needs Node.js >= 20 (found $(node --version))" >&2
  exit 1
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

sources=(src public index.html package.json package-lock.json vite.config.ts tsconfig.json tsconfig.app.json
         tsconfig.node.json)
if [ -f dist/index.html ] && [ -z "$(find "${sources[@]}" -newer dist/index.html -print -quit)" ]; then
  echo "web app: spa/dist is up to date"
else
  npm run --silent build
fi

if [ "$mode" = "test" ]; then
  npx --no-install vitest run
fi
