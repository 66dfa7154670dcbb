# Shared helpers for the SLURM test harness. Source it; do not execute it.
# shellcheck shell=bash

HARNESS_TAG=${HARNESS_TAG:-harness}

log() { printf '[%s %s] %s\n' "$HARNESS_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$HARNESS_TAG" "$*" >&2; exit 1; }

# Print the pid stored in PIDFILE (first field of its first line) if it is a number.
pidfile_pid() {
    local f=$1 pid=
    [[ -r $f ]] || return 1
    read -r pid _ <"$f" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# True if PID is alive and is program PROG (matched on the executable's basename,
# falling back to /proc/PID/comm). Guards against pid reuse after a stale pid file.
pid_is() {
    local pid=$1 prog=$2 exe comm
    [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]] || return 1
    # Zombies are not "running".
    if [[ -r /proc/$pid/stat ]]; then
        local stat
        stat=$(</proc/"$pid"/stat) || return 1
        stat=${stat##*) }
        [[ ${stat%% *} != Z ]] || return 1
    fi
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || exe=
    exe=${exe% (deleted)}
    [[ -n $exe && ${exe##*/} == "$prog" ]] && return 0
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "${prog:0:15}" ]]
}

# True if PIDFILE names a live process of program PROG; prints that pid.
daemon_alive() {
    local pidfile=$1 prog=$2 pid
    pid=$(pidfile_pid "$pidfile") || return 1
    pid_is "$pid" "$prog" || return 1
    printf '%s\n' "$pid"
}

# wait_for TIMEOUT_SECONDS CMD [ARGS...]: run CMD every 0.2 s until it succeeds.
# Returns 1 if it did not succeed in time.
wait_for() {
    local timeout=$1; shift
    local deadline=$(( $(date +%s%N) / 1000000 + timeout * 1000 ))
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        (( $(date +%s%N) / 1000000 < deadline )) || return 1
        sleep 0.2
    done
}

# stop_daemon PIDFILE PROG [TIMEOUT]: if PIDFILE names a live PROG, send SIGTERM,
# wait up to TIMEOUT s (default 15), then SIGKILL. Only that pid is ever signalled.
# Removes the pid file afterwards (also if it was stale).
stop_daemon() {
    local pidfile=$1 prog=$2 timeout=${3:-15} pid
    if pid=$(daemon_alive "$pidfile" "$prog"); then
        log "stopping $prog (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for "$timeout" _pid_gone "$pid" "$prog"; then
            log "$prog (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_for 5 _pid_gone "$pid" "$prog" || die "$prog (pid $pid) does not exit"
        fi
    fi
    rm -f "$pidfile"
}
_pid_gone() { ! pid_is "$1" "$2"; }

# Remove PIDFILE if it does not name a live PROG. Returns 0 if the daemon is alive.
clear_stale_pidfile() {
    local pidfile=$1 prog=$2
    if daemon_alive "$pidfile" "$prog" >/dev/null; then
        return 0
    fi
    if [[ -e $pidfile ]]; then
        log "removing stale pid file $pidfile"
        rm -f "$pidfile"
    fi
    return 1
}

# Print the last N lines of each existing log file given.
tail_logs() {
    local n=$1 f; shift
    for f in "$@"; do
        [[ -r $f ]] || continue
        printf '\n----- last %s lines of %s -----\n' "$n" "$f" >&2
        tail -n "$n" "$f" >&2 || true
    done
}

# Serialise harness scripts (e.g. several test workers calling slurm-up.sh at once).
# The lock is released when the calling script exits. Daemons started while it is
# held must not inherit fd 9 (start them with 9>&-), or they would keep it locked.
harness_lock() {
    local lockfile=/run/lock/dpu-slurm-harness.lock
    mkdir -p /run/lock
    exec 9>>"$lockfile"
    if ! flock -n 9; then
        log "waiting for another harness script to finish (lock $lockfile)"
        flock -w "${1:-300}" 9 || die "timed out waiting for $lockfile"
    fi
}
