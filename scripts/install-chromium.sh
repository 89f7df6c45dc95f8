#!/usr/bin/env bash
# Debian's chromium and chromium-driver, for the browser tests of the console and the proof-of-reserves
# verifier page (tests/browser.py drives them with selenium). Installed from the machine's own Debian mirror by
# package name; nothing is downloaded by a test tool of its own.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "install-chromium: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"
    exit 0
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "install-chromium: $(chromium --version 2>/dev/null | head -1); $(chromedriver --version | head -1)"
