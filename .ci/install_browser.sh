#!/usr/bin/env bash
# The browser that tests/test_app_browser.py drives: Debian's chromium and
# chromium-driver (Selenium is pointed at them and downloads nothing). Run
# as root, as CI is; skipped when both are there already.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
