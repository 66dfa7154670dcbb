#!/usr/bin/env bash
# Stop the SLURM test cluster started by harness/slurm-up.sh: slurmd, slurmctld,
# slurmdbd and mariadbd (if accounting was brought up), munged.
# Each daemon is signalled only by the pid in its pid file, and only if that pid is a
# live process of that program; we wait for it to exit. Idempotent.
# Leaves config, spool and logs in place (slurm-up.sh reuses them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=slurm-down
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"
harness_lock
START_NS=$(date +%s%N)

# Keep these paths in sync with slurm-up.sh.
stop_daemon /var/spool/slurmd/slurmd.pid       slurmd    30
stop_daemon /var/spool/slurmctld/slurmctld.pid slurmctld 30
stop_daemon /var/spool/slurmdbd/slurmdbd.pid   slurmdbd  30   # before mariadbd
stop_daemon /run/mysqld/mysqld.pid             mariadbd  60
stop_daemon /run/munge/munged.pid              munged    15
rm -f /var/spool/slurmd/slurmd.pid.conf-sha /var/spool/slurmctld/slurmctld.pid.conf-sha \
      /var/spool/slurmdbd/slurmdbd.pid.conf-sha

elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
printf 'slurm-down: OK all harness daemons stopped in %d.%03ds\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
