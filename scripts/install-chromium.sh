#!/bin/sh
# Debian's Chromium for the browser tests (Playwright drives it; its own download is blocked here).
set -e
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get install -y -q chromium >/dev/null 2>&1 || { sudo apt-get update -q >/dev/null && sudo apt-get install -y -q chromium >/dev/null; }
else
  echo "chromium is not installed and I cannot install it (not root): browser tests will fail" >&2
fi
