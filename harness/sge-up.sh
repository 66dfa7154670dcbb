#!/usr/bin/env bash
# Bring up a real single-node Grid Engine (Debian gridengine 8.1.9 + libdrmaa 1.0) on this host.
#
# Idempotent: when sge_qmaster and sge_execd already run and the cluster is configured, it only
# checks they answer. Copes with stale pid files and half-written configuration left behind when
# CI killed the daemons. Gotchas handled (see shared CLUSTERS.md): qmaster calling itself
# 'localhost' (host_aliases), root refused by min_uid/min_gid (lowered to 0), queue template
# naming missing PEs (pe_list NONE), 15 s scheduler interval (1 s here).
#
# Usage: harness/sge-up.sh
#   SGE_UP_TIMEOUT=N   seconds to wait for the queue instance to be usable (30)
#   SGE_SLOTS=N        slots of all.q on this host (default: 8; the test jobs are light)
#
# Only processes whose pid files this harness controls are ever signalled.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=sge-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"

case ${1:-} in
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1" ;;
esac
[[ $EUID -eq 0 ]] || die "must run as root"
harness_lock

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
START_NS=$(date +%s%N)
UP_TIMEOUT=${SGE_UP_TIMEOUT:-30}
SLOTS=${SGE_SLOTS:-8}
HOST=$(hostname)
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QMASTER_PID=$SPOOL/qmaster/qmaster.pid
QMASTER_LOG=$SPOOL/qmaster/messages
LIBDRMAA=/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0
ADMIN=sgeadmin
ACTIONS=()

# ---------------------------------------------------------------- 1. packages
if ! command -v qconf >/dev/null || [[ ! -x /usr/lib/gridengine/sge_qmaster ]] \
   || [[ ! -x /usr/lib/gridengine/sge_execd ]] || [[ ! -e $LIBDRMAA ]]; then
    # The questions of gridengine-common, answered before the install (non-interactive).
    printf '%s\n' "gridengine-common shared/gridenginemaster string $HOST" \
        "gridengine-common shared/gridenginecell string default" \
        "gridengine-common shared/gridengineconfig boolean true" \
        "gridengine-client shared/gridenginemaster string $HOST" \
        "gridengine-client shared/gridenginecell string default" \
        "gridengine-client shared/gridengineconfig boolean true" | debconf-set-selections
    apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold install
         gridengine-master gridengine-exec gridengine-client gridengine-drmaa1.0)
    log "installing Grid Engine packages"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/tmp/sge-harness-apt.log 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get -q update >>/tmp/sge-harness-apt.log 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>/tmp/sge-harness-apt.log 2>&1 \
            || { tail -n 30 /tmp/sge-harness-apt.log >&2; die "apt-get install gridengine failed"; }
    fi
    ACTIONS+=("installed gridengine")
fi

# ---------------------------------------------------------------- 2. the cell
# The package's postinst creates the cell; a machine where that was interrupted lacks it.
if [[ ! -s $COMMON/bootstrap || ! -d $SPOOL/spooldb ]] || ! ls "$SPOOL"/spooldb/sge* >/dev/null 2>&1; then
    log "cell '$SGE_CELL' missing or half-made: initialising it"
    install -d -o "$ADMIN" -g "$ADMIN" "$SPOOL" "$SPOOL/spooldb" "$SPOOL/qmaster" "$SPOOL/execd"
    rm -rf "${SPOOL:?}/spooldb/"* "$COMMON"
    su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb $ADMIN" \
        "$ADMIN" >/tmp/sge-harness-init.log 2>&1 \
        || { tail -n 30 /tmp/sge-harness-init.log >&2; die "init_cluster failed"; }
    ACTIONS+=("initialised cell")
fi
install -d -o "$ADMIN" -g "$ADMIN" "$SPOOL/qmaster" "$SPOOL/qmaster/job_scripts" "$SPOOL/execd"

# Gotcha 1: /etc/hosts names 127.0.0.1 'localhost' first, so qmaster resolves itself as
# localhost and refuses clients that say $HOST. Alias the two, before qmaster starts.
write_if_changed() {   # write_if_changed FILE CONTENT
    if [[ ! -e $1 || $(cat "$1") != "$2" ]]; then
        printf '%s\n' "$2" >"$1"
        chown "$ADMIN:$ADMIN" "$1"
        ACTIONS+=("wrote $1")
        return 0
    fi
    return 1
}
aliases_changed=0
write_if_changed "$COMMON/host_aliases" "$HOST localhost" && aliases_changed=1
write_if_changed "$COMMON/act_qmaster" "$HOST" || true

# ---------------------------------------------------------------- 3. sge_qmaster
qmaster_ok() { qconf -sh >/dev/null 2>&1; }
if (( aliases_changed )); then
    stop_daemon "$QMASTER_PID" sge_qmaster 30
fi
start_qmaster() {
    log "starting sge_qmaster"
    ( cd / && /usr/lib/gridengine/sge_qmaster </dev/null >>/tmp/sge-harness-qmaster.out 2>&1 9>&- ) \
        || return 1
    wait_for 30 qmaster_ok
}
if ! clear_stale_pidfile "$QMASTER_PID" sge_qmaster; then
    if ! start_qmaster; then
        # A qmaster killed mid-write can leave a Berkeley DB needing recovery.
        tail_logs 15 "$QMASTER_LOG" /tmp/sge-harness-qmaster.out
        stop_daemon "$QMASTER_PID" sge_qmaster 10
        log "sge_qmaster did not come up; recovering the spool database and retrying"
        if command -v db5.3_recover >/dev/null; then
            su -s /bin/sh -c "db5.3_recover -h $SPOOL/spooldb" "$ADMIN" || true
        fi
        start_qmaster || { tail_logs 30 "$QMASTER_LOG"; die "sge_qmaster does not answer qconf"; }
    fi
    ACTIONS+=("started sge_qmaster")
fi
wait_for 30 qmaster_ok || { tail_logs 30 "$QMASTER_LOG"; die "sge_qmaster does not answer qconf"; }

# ---------------------------------------------------------------- 4. configuration
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# set_attrs FILE KEY VALUE...: rewrite 'KEY value' lines of a qconf dump; 0 if something changed.
set_attrs() {
    local file=$1 changed=1 key val; shift
    while (( $# )); do
        key=$1 val=$2; shift 2
        if ! grep -Eq "^$key[[:space:]]+$(printf '%s' "$val" | sed 's/[][\.*^$/]/\\&/g')\$" "$file"; then
            if grep -Eq "^$key[[:space:]]" "$file"; then
                sed -i -E "s|^$key[[:space:]].*|$key $val|" "$file"
            else
                printf '%s %s\n' "$key" "$val" >>"$file"
            fi
            changed=0
        fi
    done
    return $changed
}

# Gotcha 2: root (and uids below 1000) cannot submit by default. Tests submit as root.
qconf -sconf global >"$TMP/global"
if set_attrs "$TMP/global" min_uid 0 min_gid 0; then
    qconf -Mconf "$TMP/global" >/dev/null && ACTIONS+=("lowered min_uid/min_gid")
fi

# Accounting on (qacct: how killed processes ended, their figures for dpu report). The
# value spans continuation lines, so only its accounting= word is rewritten, and only when off.
qconf -sconf global >"$TMP/global"
if ! grep -A4 '^reporting_params' "$TMP/global" | grep -q 'accounting=true'; then
    sed -i -E 's/accounting=(false|0)/accounting=true/' "$TMP/global"
    grep -A4 '^reporting_params' "$TMP/global" | grep -q 'accounting=true' \
        || sed -i -E 's/^(reporting_params[[:space:]]+)/\1accounting=true /' "$TMP/global"
    qconf -Mconf "$TMP/global" >/dev/null && ACTIONS+=("turned accounting on")
fi

# A 1 s scheduling interval, and a run right after each submit or job end.
qconf -ssconf >"$TMP/sched"
if set_attrs "$TMP/sched" schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1; then
    qconf -Msconf "$TMP/sched" >/dev/null && ACTIONS+=("set scheduler interval 1 s")
fi

qconf -sh 2>/dev/null | grep -qx "$HOST" || { qconf -ah "$HOST" >/dev/null; ACTIONS+=("added admin host"); }
qconf -ss 2>/dev/null | grep -qx "$HOST" || { qconf -as "$HOST" >/dev/null; ACTIONS+=("added submit host"); }
if ! qconf -sel 2>/dev/null | grep -qx "$HOST"; then
    printf '%s\n' "hostname $HOST" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
        "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" \
        "report_variables NONE" >"$TMP/exechost"
    qconf -Ae "$TMP/exechost" >/dev/null
    ACTIONS+=("added exec host")
fi
if ! qconf -shgrp @allhosts >"$TMP/hg" 2>/dev/null; then
    printf 'group_name @allhosts\nhostlist %s\n' "$HOST" >"$TMP/hg"
    qconf -Ahgrp "$TMP/hg" >/dev/null
    ACTIONS+=("added @allhosts")
elif set_attrs "$TMP/hg" hostlist "$HOST"; then
    qconf -Mhgrp "$TMP/hg" >/dev/null
    ACTIONS+=("fixed @allhosts")
fi

# Gotcha 5: the template names PEs that do not exist; bash as the shell, honouring #!;
# no load threshold (a busy 2-core machine would otherwise stop scheduling).
QUEUE_ATTRS=(hostlist @allhosts pe_list NONE slots "$SLOTS" shell /bin/bash
             shell_start_mode unix_behavior load_thresholds NONE)
if qconf -sq all.q >"$TMP/allq" 2>/dev/null; then
    if set_attrs "$TMP/allq" "${QUEUE_ATTRS[@]}"; then
        qconf -Mq "$TMP/allq" >/dev/null
        ACTIONS+=("fixed all.q")
    fi
else
    # `qconf -aq` prints the template through $EDITOR; cat makes that a plain dump.
    EDITOR=cat qconf -aq 2>/dev/null | awk '!seen[$1]++' >"$TMP/allq" || true
    grep -q '^qname' "$TMP/allq" || die "could not read the queue template (qconf -aq)"
    set_attrs "$TMP/allq" qname all.q "${QUEUE_ATTRS[@]}" || true
    qconf -Aq "$TMP/allq" >/dev/null
    ACTIONS+=("added all.q")
fi

# ---------------------------------------------------------------- 5. sge_execd
# execd names its spool folder after the name qmaster gives it (localhost, through the alias).
execd_pidfile() {
    local f
    for f in "$SPOOL"/execd/*/execd.pid; do
        [[ -e $f ]] && daemon_alive "$f" sge_execd >/dev/null && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}
if ! execd_pidfile >/dev/null; then
    for f in "$SPOOL"/execd/*/execd.pid; do
        [[ -e $f ]] && clear_stale_pidfile "$f" sge_execd || true
    done
    log "starting sge_execd"
    ( cd / && /usr/lib/gridengine/sge_execd </dev/null >>/tmp/sge-harness-execd.out 2>&1 9>&- ) \
        || { tail_logs 20 /tmp/sge-harness-execd.out; die "sge_execd failed to start"; }
    wait_for 15 execd_pidfile || { tail_logs 20 /tmp/sge-harness-execd.out; die "sge_execd did not write a live pid file"; }
    ACTIONS+=("started sge_execd")
fi

# ---------------------------------------------------------------- 6. wait for the queue
# Usable: the queue instance reports a load (not '-') and carries no state letters
# (u = unknown, E = error, d = disabled, ...).
queue_line() { qstat -f -q "all.q@$HOST" 2>/dev/null | awk -v q="all.q@$HOST" '$1 == q'; }
queue_ok() {
    local line
    line=$(queue_line)
    [[ -n $line ]] || return 1
    # fields: queuename qtype resv/used/tot load arch [states]
    [[ $(awk '{print $4}' <<<"$line") != "-NA-" && -z $(awk '{print $6}' <<<"$line") ]]
}
cleared=0
deadline=$(( $(date +%s) + UP_TIMEOUT ))
until queue_ok; do
    st=$(awk '{print $6}' <<<"$(queue_line)")
    # An error (E) or disabled (d) state left over from a killed run: clear / enable it once.
    if [[ $st == *E* || $st == *d* ]] && (( ! cleared )); then
        cleared=1
        log "queue all.q@$HOST is in state '$st': clearing it"
        qmod -c "all.q@$HOST" >/dev/null 2>&1 || true
        qmod -e "all.q@$HOST" >/dev/null 2>&1 || true
        ACTIONS+=("cleared queue state '$st'")
    fi
    if (( $(date +%s) >= deadline )); then
        qstat -f >&2 || true
        tail_logs 30 "$QMASTER_LOG"
        die "queue all.q@$HOST not usable after ${UP_TIMEOUT}s"
    fi
    sleep 0.3
done

elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
did=$(IFS=';'; echo "${ACTIONS[*]:-nothing to do}")
printf 'sge-up: OK host=%s SGE_ROOT=%s queue=all.q slots=%s libdrmaa=%s qmaster=%s execd=%s in %d.%03ds [%s]\n' \
    "$HOST" "$SGE_ROOT" "$SLOTS" "$LIBDRMAA" "$(pidfile_pid "$QMASTER_PID")" \
    "$(pidfile_pid "$(execd_pidfile)")" $((elapsed_ms / 1000)) $((elapsed_ms % 1000)) "$did"
