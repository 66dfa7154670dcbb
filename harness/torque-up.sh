#!/usr/bin/env bash
# Install Slurm's Torque-compatible qsub/qstat/qdel (Debian slurm-wlm-torque) beside Grid Engine,
# over the SLURM that harness/slurm-up.sh runs (started first if needed).
#
# The package conflicts with gridengine-client (both own /usr/bin/qsub), so it is unpacked with
# `dpkg -x` outside PATH, into $TORQUE_DIR (default /opt/dpu-torque); the wrappers call sbatch,
# squeue, scontrol and scancel from their own folder, so those are symlinked beside them.
# A PBS DPU uses them with `bin_dir: /opt/dpu-torque/usr/bin` and `flavor: slurm`.
#
# Idempotent: re-unpacks only when the package version changed or the folder is incomplete.
#
# Usage: harness/torque-up.sh          TORQUE_DIR=DIR to unpack elsewhere
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=torque-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"

case ${1:-} in
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1" ;;
esac
[[ $EUID -eq 0 ]] || die "must run as root"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
START_NS=$(date +%s%N)
DIR=${TORQUE_DIR:-/opt/dpu-torque}
BIN=$DIR/usr/bin
ACTIONS=()

# The wrappers talk to slurmctld: make sure it runs (before taking the lock it also takes).
bash "$HERE/slurm-up.sh" >/dev/null || die "harness/slurm-up.sh failed"
harness_lock

# ---------------------------------------------------------------- 1. Perl modules the wrappers use
missing=()
for pkg in libslurm-perl libslurmdb-perl libswitch-perl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    log "installing ${missing[*]}"
    apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 install "${missing[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/tmp/torque-harness-apt.log 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get -q update >>/tmp/torque-harness-apt.log 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >>/tmp/torque-harness-apt.log 2>&1 \
            || { tail -n 30 /tmp/torque-harness-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    ACTIONS+=("installed ${missing[*]}")
fi

# ---------------------------------------------------------------- 2. the wrappers, unpacked
WANT=$(apt-cache policy slurm-wlm-torque 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -z $WANT || $WANT == "(none)" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get -q update >/tmp/torque-harness-apt.log 2>&1 || true
    WANT=$(apt-cache policy slurm-wlm-torque 2>/dev/null | awk '/Candidate:/ {print $2}')
fi
[[ -n $WANT && $WANT != "(none)" ]] || die "no slurm-wlm-torque package known to apt"
HAVE=$(cat "$DIR/.version" 2>/dev/null || true)
complete() { local c; for c in qsub qstat qdel; do [[ -x $BIN/$c ]] || return 1; done; }
if [[ $HAVE != "$WANT" ]] || ! complete; then
    log "unpacking slurm-wlm-torque $WANT into $DIR"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    ( cd "$work" && apt-get download "slurm-wlm-torque=$WANT" >/tmp/torque-harness-download.log 2>&1 ) \
        || { tail -n 20 /tmp/torque-harness-download.log >&2; die "apt-get download slurm-wlm-torque failed"; }
    rm -rf "$DIR.new"
    dpkg -x "$work"/slurm-wlm-torque_*.deb "$DIR.new"
    printf '%s\n' "$WANT" >"$DIR.new/.version"
    rm -rf "$DIR"
    mv "$DIR.new" "$DIR"
    ACTIONS+=("unpacked slurm-wlm-torque $WANT")
fi
for c in sbatch squeue scontrol scancel salloc srun sacct sinfo; do
    src=$(command -v "$c") || die "$c not found (slurm-client missing?)"
    if [[ $(readlink "$BIN/$c" 2>/dev/null) != "$src" ]]; then
        ln -sfn "$src" "$BIN/$c"
        ACTIONS+=("linked $c")
    fi
done

# ---------------------------------------------------------------- 3. check
# With no job to list, the wrappers' qstat exits 153 and prints nothing.
rc=0
"$BIN/qstat" >/dev/null 2>/tmp/torque-harness-qstat.err || rc=$?
[[ ($rc == 0 || $rc == 153) && ! -s /tmp/torque-harness-qstat.err ]] \
    || { cat /tmp/torque-harness-qstat.err >&2; die "$BIN/qstat does not run (exit $rc)"; }

elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
did=$(IFS=';'; echo "${ACTIONS[*]:-nothing to do}")
printf 'torque-up: OK wrappers=%s version=%s in %d.%03ds [%s]\n' "$BIN" "$WANT" \
    $((elapsed_ms / 1000)) $((elapsed_ms % 1000)) "$did"
