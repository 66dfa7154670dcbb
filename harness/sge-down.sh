#!/usr/bin/env bash
# Stop the Grid Engine started by harness/sge-up.sh: sge_execd, then sge_qmaster.
# Each daemon is signalled only by the pid in its pid file, and only if that pid is a live
# process of that program; we wait for it to exit. Idempotent. Leaves config and spool in place
# (sge-up.sh reuses them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=sge-down
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"
harness_lock
START_NS=$(date +%s%N)
SPOOL=/var/spool/gridengine   # keep in sync with sge-up.sh

for f in "$SPOOL"/execd/*/execd.pid; do
    [[ -e $f ]] && stop_daemon "$f" sge_execd 30
done
stop_daemon "$SPOOL/qmaster/qmaster.pid" sge_qmaster 30

elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
printf 'sge-down: OK Grid Engine daemons stopped in %d.%03ds\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
