#!/usr/bin/env bash
# Stop the test sshd started by sshd-up.sh (by its pid file only).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=sshd-down
# shellcheck source=lib.sh
. "$HERE/lib.sh"
stop_daemon "${SSHD_STATE:-/var/lib/dpu-sshd}/sshd.pid" sshd
