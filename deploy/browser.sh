#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test and screenshot: Debian's chromium and
# chromium-driver packages (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent; needs root or
# sudo. Where neither can install them it says so and exits 0: the browser test then skips with
# that reason printed (streamrec.dashboard.browser.missing).
set -uo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "browser.sh: not root and no sudo: chromium not installed (the browser test will skip)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "browser.sh: no apt-get: install chromium and chromedriver by hand" >&2
  exit 0
fi
echo "browser.sh: installing Debian's chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "browser.sh: apt-get could not install chromium (the browser test will skip)" >&2
fi
exit 0
