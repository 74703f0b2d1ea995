#!/usr/bin/env bash
# e2e/run.sh: installs what the dashboard e2e test needs (Debian's Chromium, playwright-core) and runs it.
# Expects the fitd binary to be built already (FITD_BIN, or $CARGO_TARGET_DIR/debug/fitd, or target/debug/fitd).
set -euo pipefail
cd "$(dirname "$0")"
if ! [ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
npm ci --no-audit --no-fund
node --test dashboard.test.mjs auth.test.mjs
