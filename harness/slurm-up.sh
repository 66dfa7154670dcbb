#!/usr/bin/env bash
# Bring up a real single-node SLURM (Debian slurm-wlm 22.05 + munge) on this host.
#
# Idempotent: if munged, slurmctld and slurmd are already running with the current
# config, it only checks they answer and prints the summary. Copes with stale pid
# files / spool left behind when CI killed the daemons. Restarts the SLURM daemons
# if the generated slurm.conf changed.
#
# Usage: harness/slurm-up.sh [--accounting]
#   --accounting / SLURM_ACCOUNTING=1  (default) also run MariaDB + slurmdbd so `sacct` works;
#   --no-accounting / SLURM_ACCOUNTING=0  without them
#   SLURM_MIN_JOB_AGE=N                MinJobAge (default 5 s)
#   SLURM_UP_TIMEOUT=N                 seconds to wait for the node to be usable (30)
#   SLURM_KEEP_STATE=1                 after a crash (stale slurmctld pid file) keep the
#                                      saved jobs instead of starting with -c
#
# Only processes whose pid files this harness controls are ever signalled.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=slurm-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"

ACCOUNTING=${SLURM_ACCOUNTING:-1}
for arg in "$@"; do
    case $arg in
        --accounting) ACCOUNTING=1 ;;
        --no-accounting) ACCOUNTING=0 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done
[[ $ACCOUNTING == 1 ]] || ACCOUNTING=0
[[ $EUID -eq 0 ]] || die "must run as root"
harness_lock

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
START_NS=$(date +%s%N)
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-30}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-5}
[[ $MIN_JOB_AGE =~ ^[0-9]+$ ]] || die "SLURM_MIN_JOB_AGE must be a non-negative integer, got '$MIN_JOB_AGE'"

# ---------------------------------------------------------------- paths
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
DBD_DIR=/var/spool/slurmdbd
LOG_DIR=/var/log/slurm
CTLD_PID=$CTLD_STATE/slurmctld.pid
SLURMD_PID=$SLURMD_SPOOL/slurmd.pid
DBD_PID=$DBD_DIR/slurmdbd.pid
CTLD_LOG=$LOG_DIR/slurmctld.log
SLURMD_LOG=$LOG_DIR/slurmd.log
DBD_LOG=$LOG_DIR/slurmdbd.log
MUNGE_PID=/run/munge/munged.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_LOG=/var/log/munge/munged.log
MYSQL_RUN=/run/mysqld
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
MYSQL_PID=$MYSQL_RUN/mysqld.pid
MYSQL_LOG=/var/log/mysql/harness-mariadbd.log
CLUSTER=dpu
DB_USER=slurm
DB_PASS=slurmharness
DB_NAME=slurm_acct_db

HOST=$(hostname -s)
ACTIONS=()   # what this run actually did, for the summary

# ---------------------------------------------------------------- 1. packages
apt_install() {
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold install)
    log "installing: $*"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" >/tmp/slurm-harness-apt.log 2>&1; then
        log "install failed; running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >>/tmp/slurm-harness-apt.log 2>&1 \
            || { tail -n 30 /tmp/slurm-harness-apt.log >&2; die "apt-get update failed"; }
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "$@" >>/tmp/slurm-harness-apt.log 2>&1 \
            || { tail -n 30 /tmp/slurm-harness-apt.log >&2; die "apt-get install $* failed (log: /tmp/slurm-harness-apt.log)"; }
    fi
    ACTIONS+=("installed $*")
}

missing=()
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    || missing+=(slurm-wlm)
command -v munged >/dev/null || missing+=(munge)
if [[ $ACCOUNTING == 1 ]]; then
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
fi
(( ${#missing[@]} == 0 )) || apt_install "${missing[@]}"

# ---------------------------------------------------------------- 2. munge
start_munge() {
    install -d -m 0755 -o munge -g munge /run/munge
    install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge
    install -d -m 0700 -o munge -g munge /var/log/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null; then
            rm -f "$MUNGE_KEY"
            runuser -u munge -- mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
        ACTIONS+=("created munge key")
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"

    if clear_stale_pidfile "$MUNGE_PID" munged; then
        return 0
    fi
    log "starting munged"
    # --force: take over a stale socket / lock left behind by a killed munged.
    ( cd / && runuser -u munge -- /usr/sbin/munged --force --pid-file="$MUNGE_PID" \
        </dev/null >>/tmp/slurm-harness-munged.out 2>&1 9>&- ) \
        || { tail_logs 20 "$MUNGE_LOG" /tmp/slurm-harness-munged.out; die "munged failed to start"; }
    wait_for 10 daemon_alive "$MUNGE_PID" munged \
        || { tail_logs 20 "$MUNGE_LOG"; die "munged did not write a live pid file"; }
    ACTIONS+=("started munged")
}
munge_ok() { munge -n | unmunge >/dev/null; }

start_munge
wait_for 10 munge_ok || { tail_logs 20 "$MUNGE_LOG"; die "munge -n | unmunge fails"; }

# ---------------------------------------------------------------- 3. slurm.conf
CPUS=$(nproc)
# The node offers 16 job slots per core. Oversubscription (OverSubscribe=FORCE:16) would do the
# same but stops working once preemption is configured (jobs then share cores only under gang
# scheduling), so the node declares the slots as CPUs and slurmd accepts it (config_overrides).
SLOTS=$((CPUS * 16))
MEM_MIB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
REAL_MEM=$(( MEM_MIB * 95 / 100 ))     # a bit below what slurmd will detect
(( REAL_MEM > 0 )) || die "could not read MemTotal"

if [[ $ACCOUNTING == 1 ]]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none"
fi

gen_slurm_conf() {
    cat <<EOF
# Written by harness/slurm-up.sh of dpu_slurm (test harness). Overwritten on every run.
ClusterName=$CLUSTER
# Explicit loopback addresses: all traffic stays on 127.0.0.1 whatever the host name resolves to.
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Per-step usage (MaxRSS, TotalCPU) for sacct and dpu report, sampled each second so a
# short job's peak is seen. A changed line restarts the daemons once (the config hash below).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
$ACCT_LINES
MailProg=/bin/true

StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info

SchedulerType=sched/backfill
SlurmdParameters=config_overrides
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1,default_queue_depth=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
KillWait=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
CompleteWait=0

NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$SLOTS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=long Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PreemptMode=OFF
# Preemption for real (issue 13): a job in "urgent" (higher tier) requeues a job of
# "scavenger" that holds the CPUs it needs (a test's victim asks for all $SLOTS); the victim first gets its --signal at once
# (preempt_send_user_signal) and GraceTime seconds to checkpoint. debug and long are never
# preempted, so other tests are not disturbed.
PartitionName=scavenger Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10 OverSubscribe=NO
PartitionName=urgent Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF OverSubscribe=NO
EOF
}

install -d -m 0755 /etc/slurm "$CTLD_STATE" "$SLURMD_SPOOL" "$LOG_DIR"
tmp_conf=$(mktemp)
gen_slurm_conf >"$tmp_conf"
if ! cmp -s "$tmp_conf" "$SLURM_CONF"; then
    install -m 0644 "$tmp_conf" "$SLURM_CONF"
    ACTIONS+=("wrote $SLURM_CONF")
    # The running daemons (if any) may have loaded some other content (even one that
    # hashes like the new file, e.g. after a hand edit + reconfigure): restart them.
    rm -f "$CTLD_PID.conf-sha" "$SLURMD_PID.conf-sha"
fi
rm -f "$tmp_conf"
CONF_SHA=$(sha256sum "$SLURM_CONF" | cut -d' ' -f1)

# ---------------------------------------------------------------- 4. accounting (optional)
mysql_q() { mariadb --protocol=socket -S "$MYSQL_SOCK" -u root -N -B "$@"; }

start_mariadb() {
    install -d -m 0755 -o mysql -g mysql "$MYSQL_RUN" /var/log/mysql
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
            --auth-root-authentication-method=socket >/tmp/slurm-harness-mariadb-init.log 2>&1 \
            || { tail -n 30 /tmp/slurm-harness-mariadb-init.log >&2; die "mariadb-install-db failed"; }
    fi
    if ! clear_stale_pidfile "$MYSQL_PID" mariadbd; then
        log "starting mariadbd"
        # A killed mariadbd leaves its socket; mariadbd replaces it itself.
        # mariadbd does not daemonise: setsid -f forks it off into its own session, with
        # no fd of ours (a caller capturing our output must not wait for mariadbd).
        ( cd / && exec setsid -f /usr/sbin/mariadbd --user=mysql --pid-file="$MYSQL_PID" \
            --socket="$MYSQL_SOCK" --log-error="$MYSQL_LOG" --bind-address=127.0.0.1 \
            </dev/null >/dev/null 2>&1 9>&- )
        ACTIONS+=("started mariadbd")
    fi
    wait_for 30 mariadb-admin --protocol=socket -S "$MYSQL_SOCK" ping \
        || { tail_logs 30 "$MYSQL_LOG"; die "mariadbd does not answer ping"; }
    wait_for 5 daemon_alive "$MYSQL_PID" mariadbd \
        || { tail_logs 30 "$MYSQL_LOG"; die "mariadbd pid file $MYSQL_PID does not name a live mariadbd"; }
    # Idempotent: CREATE IF NOT EXISTS / GRANT are safe to repeat.
    mysql_q -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';" \
        || die "could not create the accounting database user"
}

write_dbd_conf() {
    local tmp
    install -d -m 0755 "$DBD_DIR" "$LOG_DIR" /etc/slurm
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by harness/slurm-up.sh of dpu_slurm (test harness). Overwritten on every run.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
LogFile=$DBD_LOG
PidFile=$DBD_PID
DebugLevel=info
EOF
    if ! cmp -s "$tmp" "$DBD_CONF"; then
        install -m 0600 -o root -g root "$tmp" "$DBD_CONF"
        ACTIONS+=("wrote $DBD_CONF")
    fi
    rm -f "$tmp"
    chmod 0600 "$DBD_CONF"; chown root:root "$DBD_CONF"
}

DBD_CLUSTERS=$(mktemp)
trap 'rm -f "$DBD_CLUSTERS"' EXIT
# Also records the registered clusters (sacctmgr takes ~0.2 s: call it once).
dbd_ok() {
    daemon_alive "$DBD_PID" slurmdbd >/dev/null \
        && sacctmgr -n -P show cluster format=cluster >"$DBD_CLUSTERS" 2>/dev/null
}

start_slurmdbd() {
    write_dbd_conf
    local sha stamp=$DBD_PID.conf-sha
    sha=$(sha256sum "$DBD_CONF" | cut -d' ' -f1)
    if daemon_alive "$DBD_PID" slurmdbd >/dev/null && [[ $(cat "$stamp" 2>/dev/null) != "$sha" ]]; then
        log "slurmdbd.conf changed: restarting slurmdbd"
        stop_daemon "$DBD_PID" slurmdbd 30
    fi
    if ! clear_stale_pidfile "$DBD_PID" slurmdbd; then
        log "starting slurmdbd"
        ( cd / && slurmdbd </dev/null >/dev/null 2>&1 9>&- ) \
            || { tail_logs 30 "$DBD_LOG"; die "slurmdbd failed to start"; }
        printf '%s\n' "$sha" >"$stamp"
        ACTIONS+=("started slurmdbd")
    fi
    # slurmdbd creates its tables on first start; that can take several seconds.
    wait_for 60 dbd_ok || { tail_logs 30 "$DBD_LOG"; die "slurmdbd does not answer sacctmgr"; }
}

if [[ $ACCOUNTING == 1 ]]; then
    start_mariadb
    start_slurmdbd
fi

if [[ $ACCOUNTING == 1 ]]; then
    # Must come after slurm.conf names the cluster, before slurmctld registers.
    if ! grep -qx "$CLUSTER" "$DBD_CLUSTERS"; then
        log "registering cluster $CLUSTER with slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
        ACTIONS+=("added cluster $CLUSTER to slurmdbd")
    fi
fi

# ---------------------------------------------------------------- 5. slurmctld, slurmd
# A daemon is reused only if it is alive AND was started by us with this exact config
# (stamp file next to its pid file). Otherwise it is (re)started.
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

ensure_daemon() {   # ensure_daemon PROG PIDFILE LOG [START ARGS...]
    local prog=$1 pidfile=$2 logf=$3; shift 3
    local stamp=$pidfile.conf-sha
    if daemon_alive "$pidfile" "$prog" >/dev/null; then
        if [[ $(cat "$stamp" 2>/dev/null) == "$CONF_SHA" ]]; then
            return 0
        fi
        log "config changed since $prog was started: restarting it"
        stop_daemon "$pidfile" "$prog" 30
        ACTIONS+=("stopped $prog (config changed)")
    else
        clear_stale_pidfile "$pidfile" "$prog" || true
    fi
    rm -f "$stamp"
    log "starting $prog $*"
    ( cd / && "$prog" "$@" </dev/null >>"/tmp/slurm-harness-$prog.out" 2>&1 9>&- ) \
        || { tail_logs 30 "$logf" "/tmp/slurm-harness-$prog.out"; return 1; }
    if ! wait_for 15 daemon_alive "$pidfile" "$prog"; then
        tail_logs 30 "$logf" "/tmp/slurm-harness-$prog.out"
        return 1
    fi
    printf '%s\n' "$CONF_SHA" >"$stamp"
    ACTIONS+=("started $prog")
}

# If slurmctld must be restarted, restart slurmd after it too (fresh registration).
if ! daemon_alive "$CTLD_PID" slurmctld >/dev/null \
   || [[ $(cat "$CTLD_PID.conf-sha" 2>/dev/null) != "$CONF_SHA" ]]; then
    stop_daemon "$SLURMD_PID" slurmd 30
fi

# A pid file naming no live slurmctld means it was killed (CI ends every process a
# session left running). Its periodically saved state is then stale: finished jobs
# come back as pending and re-run. Start clean with -c (no jobs, node state from
# slurm.conf) unless SLURM_KEEP_STATE=1. After slurm-down.sh (clean stop, no pid
# file) the saved jobs are kept.
CTLD_ARGS=()
if [[ -e $CTLD_PID ]] && ! daemon_alive "$CTLD_PID" slurmctld >/dev/null \
   && [[ ${SLURM_KEEP_STATE:-0} != 1 ]]; then
    log "slurmctld was killed earlier (stale pid file): starting it with -c (discarding saved jobs)"
    CTLD_ARGS=(-c)
    ACTIONS+=("discarded stale slurmctld job state")
fi

# 0 once slurmctld answers; 1 as soon as it has died (fatal at start-up) or after 20 s.
wait_ctld() {
    local deadline=$(( $(date +%s) + 20 ))
    until ctld_ok; do
        daemon_alive "$CTLD_PID" slurmctld >/dev/null || return 1
        (( $(date +%s) < deadline )) || return 1
        sleep 0.2
    done
}

# Move a daemon's state dir aside (keeping only the latest broken copy) and recreate it.
set_state_aside() {
    local dir=$1
    rm -rf "$dir.broken"
    [[ -d $dir ]] && mv "$dir" "$dir.broken"
    install -d -m 0755 "$dir"
    log "moved unusable state $dir to $dir.broken"
}

if ! ensure_daemon slurmctld "$CTLD_PID" "$CTLD_LOG" "${CTLD_ARGS[@]}" || ! wait_ctld; then
    # Saved state from an earlier run (a half-written or corrupt state file, another
    # cluster name, ...) can make slurmctld exit at start-up, even with -c (it still
    # reads job_state). Retry once from an empty StateSaveLocation.
    tail_logs 15 "$CTLD_LOG"
    log "slurmctld did not come up; retrying from empty state"
    stop_daemon "$CTLD_PID" slurmctld 10
    set_state_aside "$CTLD_STATE"
    ensure_daemon slurmctld "$CTLD_PID" "$CTLD_LOG" -c \
        || die "slurmctld failed to start (log: $CTLD_LOG)"
    wait_ctld || { tail_logs 40 "$CTLD_LOG"; die "slurmctld does not answer 'scontrol ping' (log: $CTLD_LOG)"; }
    ACTIONS+=("reset slurmctld state (old one in $CTLD_STATE.broken)")
fi

slurmd_started_at=0
if ! daemon_alive "$SLURMD_PID" slurmd >/dev/null \
   || [[ $(cat "$SLURMD_PID.conf-sha" 2>/dev/null) != "$CONF_SHA" ]]; then
    slurmd_started_at=$(date +%s)
fi
if ! ensure_daemon slurmd "$SLURMD_PID" "$SLURMD_LOG"; then
    log "slurmd did not come up; retrying from an empty spool dir"
    stop_daemon "$SLURMD_PID" slurmd 10
    set_state_aside "$SLURMD_SPOOL"
    ensure_daemon slurmd "$SLURMD_PID" "$SLURMD_LOG" -c || die "slurmd failed to start (log: $SLURMD_LOG)"
    ACTIONS+=("reset slurmd spool (old one in $SLURMD_SPOOL.broken)")
fi

# ---------------------------------------------------------------- 6. wait for the node
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1; }
resumed=0
# slurmctld restores the node's saved state (e.g. "idle") before slurmd has registered,
# so after (re)starting slurmd also require its registration (SlurmdStartTime) to be new.
slurmd_registered() {
    (( slurmd_started_at == 0 )) && return 0
    local t
    t=$(scontrol -o show node "$HOST" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    [[ -n $t && $t != None ]] || return 1
    t=$(date -d "$t" +%s 2>/dev/null) || return 1
    (( t >= slurmd_started_at - 1 ))
}
node_usable() {
    local st
    slurmd_registered || return 1
    st=$(node_state)
    case $st in
        idle|mixed|allocated|completing) return 0 ;;
        down|drained|draining|drain|fail|failing)
            # Responding but down/drained (e.g. saved state from a killed run): resume it.
            if (( resumed < 3 )); then
                resumed=$((resumed + 1))
                log "node $HOST is '$st': scontrol update state=resume"
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                [[ $resumed == 1 ]] && ACTIONS+=("resumed node from '$st'")
            fi
            return 1 ;;
        *) return 1 ;;   # idle*, down*, unknown: not responding yet
    esac
}
# Not via wait_for: node_usable updates $resumed in this shell.
deadline=$(( $(date +%s) + UP_TIMEOUT ))
until node_usable; do
    for d in slurmctld:"$CTLD_PID":"$CTLD_LOG" slurmd:"$SLURMD_PID":"$SLURMD_LOG"; do
        IFS=: read -r prog pidf logf <<<"$d"
        daemon_alive "$pidf" "$prog" >/dev/null \
            || { tail_logs 40 "$logf"; die "$prog exited while waiting for node $HOST (log: $logf)"; }
    done
    if (( $(date +%s) >= deadline )); then
        printf '\nsinfo:\n' >&2; sinfo -N -l >&2 || true
        scontrol show node "$HOST" >&2 || true
        tail_logs 40 "$CTLD_LOG" "$SLURMD_LOG"
        die "node $HOST not usable after ${UP_TIMEOUT}s (state: '$(node_state)')"
    fi
    sleep 0.2
done

# ---------------------------------------------------------------- 7. summary
elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
did=$(IFS=';'; echo "${ACTIONS[*]:-nothing to do}")
acct=off; [[ $ACCOUNTING == 1 ]] && acct=on
printf 'slurm-up: OK host=%s state=%s cpus=%s mem=%sMiB partitions=debug*,long,scavenger,urgent MinJobAge=%s accounting=%s slurmctld=%s slurmd=%s munged=%s in %d.%03ds [%s]\n' \
    "$HOST" "$(node_state)" "$CPUS" "$REAL_MEM" "$MIN_JOB_AGE" "$acct" \
    "$(pidfile_pid "$CTLD_PID")" "$(pidfile_pid "$SLURMD_PID")" "$(pidfile_pid "$MUNGE_PID")" \
    $((elapsed_ms / 1000)) $((elapsed_ms % 1000)) "$did"
