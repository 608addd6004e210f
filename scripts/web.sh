#!/usr/bin/env bash
# The web page's checks (scripts/test.sh runs this after the cargo tests):
#   0. the binaries the browser test starts (mpcvit-server, mpcvit-dealer,
#      mpcvit-client), built with the test profile: the cargo tests' own
#      dependencies, optimised, so only the binaries are linked
#   1. npm ci (web/package-lock.json)
#   2. the client API's TypeScript (web/src/gen/) regenerated from proto/:
#      unchanged
#   3. tsc --noEmit
#   4. the bundle rebuilt: web/dist/ (committed, embedded in mpcvit-client)
#      unchanged byte for byte, and within 150 KB gzipped
#   5. node --test web/test/: headless Chromium against the real processes
#      (web/test/browser.test.mjs); screenshots in web/test-output/
# Usage: bash scripts/web.sh      (MPCVIT_BIN_DIR=DIR: use the binaries in
#        DIR instead of building them into target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MPCVIT_BIN_DIR:-}" ]; then
  cargo build --profile test -p mpcvit-server -p mpcvit-client
fi
cd web

changed() {
  # Tracked files that differ, and files git does not know, under $1.
  git status --porcelain --untracked-files=all -- "$1"
}

npm ci --no-audit --no-fund --loglevel=error
npm run --silent generate
if [ -n "$(changed src/gen)" ]; then
  changed src/gen >&2
  echo "web.sh: web/src/gen/ is not what proto/ generates: run \`npm run generate\` in web/ and commit" >&2
  exit 1
fi
npx tsc --noEmit
node build.mjs
if [ -n "$(changed dist)" ]; then
  changed dist >&2
  echo "web.sh: web/dist/ is not what the sources build: run \`npm run build\` in web/ and commit" >&2
  exit 1
fi
echo "web.sh: web/dist/ is reproduced byte for byte"
command -v "${MPCVIT_CHROMIUM:-chromium}" >/dev/null \
  || { echo "web.sh: chromium not found: run scripts/setup.sh as root (Debian package chromium)" >&2; exit 1; }
npm test
