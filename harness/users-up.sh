#!/usr/bin/env bash
# Make sure two ordinary Unix users exist for the cross-user tests (pytest -m users):
# dpualice (an honest user) and dpumallory (a hostile one). Idempotent: existing users are kept.
# Each gets a home folder (0755, so the tests' files under it can be checked as root) and no
# password (they are only ever entered with runuser by root). Also makes sure /usr/bin/python3,
# which their processes run (the test machine's own Python may sit under /root, mode 0700), and
# runuser are there. Prints OK.
#
# Env: USERS_UP_NAMES ("dpualice dpumallory")
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=users-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[[ $EUID -eq 0 ]] || die "must run as root (it creates users)"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if [[ ! -x /usr/bin/python3 ]]; then
    log "installing python3 for the test users' processes"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 >/dev/null; }
fi
command -v runuser >/dev/null || die "runuser (util-linux) is missing"

for name in ${USERS_UP_NAMES:-dpualice dpumallory}; do
    if ! id "$name" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash --user-group "$name"
        log "created user $name"
    fi
    home=$(getent passwd "$name" | cut -d: -f6)
    [[ -d $home ]] || install -d -m 0755 -o "$name" -g "$(id -gn "$name")" "$home"
    chmod 0755 "$home"
done
echo OK
