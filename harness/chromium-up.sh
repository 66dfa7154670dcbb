#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the queue page tests (tests/test_web_browser.py).
#
# Idempotent: when /usr/bin/chromium answers --version it only prints the summary. Otherwise it
# installs Debian's `chromium` (and a font, so screenshots show text) with apt-get, running
# `apt-get update` only when the install fails without it. Starts no daemon: each test launches
# its own headless browser and stops it.
#
# Env: CHROMIUM (/usr/bin/chromium)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=chromium-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PACKAGES=(chromium fonts-dejavu-core)
ACTION="nothing to do"

usable() { "$CHROMIUM" --version >/dev/null 2>&1 && fc-list 2>/dev/null | grep -q .; }

if ! usable; then
    [[ $EUID -eq 0 ]] || die "chromium is missing and this is not root: apt-get install ${PACKAGES[*]}"
    harness_lock
    if ! usable; then   # another harness run may have installed it while we waited
        apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends install)
        log "installing: ${PACKAGES[*]}"
        if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${PACKAGES[@]}" >/tmp/chromium-harness-apt.log 2>&1; then
            log "install failed; running apt-get update first"
            DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update \
                >>/tmp/chromium-harness-apt.log 2>&1 || true
            DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${PACKAGES[@]}" >>/tmp/chromium-harness-apt.log 2>&1 \
                || { tail -n 30 /tmp/chromium-harness-apt.log >&2; die "apt-get install ${PACKAGES[*]} failed"; }
        fi
        ACTION="installed ${PACKAGES[*]}"
    fi
    usable || die "$CHROMIUM does not run after the install (see /tmp/chromium-harness-apt.log)"
fi

printf 'chromium-up: OK %s (%s) [%s]\n' "$CHROMIUM" "$("$CHROMIUM" --version 2>/dev/null | head -n1)" "$ACTION"
