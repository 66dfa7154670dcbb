#!/usr/bin/env bash
# Make the Unix users of the web bench (bench/web_bench.py): dpubench00 .. dpubench49 by default.
#
# Idempotent: a user that exists is left alone. System users without a home or a login shell;
# they only own job cards and job folders the bench writes, so the page's owner checks (a card
# is believed only in a folder its owner owns) see 50 real users. Kept afterwards (cheap).
#
# Env: BENCH_USERS (50), BENCH_USER_PREFIX (dpubench)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=bench-users
# shellcheck source=lib.sh
. "$HERE/lib.sh"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

COUNT=${BENCH_USERS:-50}
PREFIX=${BENCH_USER_PREFIX:-dpubench}
[[ $(id -u) -eq 0 ]] || die "run as root: it creates Unix users"
made=0
for ((i = 0; i < COUNT; i++)); do
    name=$(printf '%s%02d' "$PREFIX" "$i")
    if ! id -u "$name" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$name"
        made=$((made + 1))
    fi
done
log "$COUNT bench users ${PREFIX}00.. present ($made created now)"
