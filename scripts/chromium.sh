#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the console's browser tests; prints its path.
# Installs it with apt-get when it is absent and this runs as root; exits 1 (with the reason
# on stderr) when it cannot be had, so the tests that need it are skipped, not failed.
# Playwright drives this browser (executable_path); its own browser downloads are not used.
set -euo pipefail
for name in chromium chromium-browser; do
    if path="$(command -v "$name")"; then
        echo "$path"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "streamsync: chromium is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 1
fi
echo "streamsync: installing chromium from Debian's packages" >&2
log="$(mktemp)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "streamsync: installing chromium failed" >&2
    exit 1
fi
command -v chromium
