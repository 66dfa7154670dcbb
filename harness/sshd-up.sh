#!/usr/bin/env bash
# Bring up a real OpenSSH server on 127.0.0.1 for the SSH transport tests (idempotent).
#
# State in /var/lib/dpu-sshd: its own host key, sshd_config, pid file, a client key pair for
# the caller and a known_hosts line for the server. An ordinary user (default dpuuser) accepts
# that client key. Prints the facts the tests need as KEY=VALUE lines on stdout.
#
# Env: SSHD_PORT (2222), SSHD_USER (dpuuser), SSHD_STATE (/var/lib/dpu-sshd)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_TAG=sshd-up
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[[ $EUID -eq 0 ]] || die "must run as root"

PORT=${SSHD_PORT:-2222}
USER_NAME=${SSHD_USER:-dpuuser}
STATE=${SSHD_STATE:-/var/lib/dpu-sshd}
PIDFILE=$STATE/sshd.pid
CONF=$STATE/sshd_config
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if ! command -v sshd >/dev/null || ! command -v ssh-keygen >/dev/null || ! command -v scp >/dev/null; then
    log "installing openssh-server and openssh-client"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server openssh-client >/dev/null; }
fi

# Jobs of the remote user run a system Python (the machine's own may sit under /root, mode 0700).
if [[ ! -x /usr/bin/python3 ]]; then
    log "installing python3 for the remote user's jobs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 >/dev/null
fi

install -d -m 0755 "$STATE" "$STATE/client"
[[ -s $STATE/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/host_ed25519"
[[ -s $STATE/client/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C dpu-tests -f "$STATE/client/id_ed25519"
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$STATE/host_ed25519.pub")" >"$STATE/known_hosts"

# The ordinary user: key login only ('*' unlocks it for keys: a '!' password makes sshd refuse).
if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$USER_NAME"
fi
usermod -p '*' "$USER_NAME"
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$HOME_DIR/.ssh"
install -m 0600 -o "$USER_NAME" -g "$USER_NAME" "$STATE/client/id_ed25519.pub" "$HOME_DIR/.ssh/authorized_keys"

tmp=$(mktemp)
cat >"$tmp" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $STATE/host_ed25519
PidFile $PIDFILE
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
AllowTcpForwarding yes
MaxStartups 50:30:100
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel ERROR
CONF
changed=0
cmp -s "$tmp" "$CONF" || { install -m 0644 "$tmp" "$CONF"; changed=1; }
rm -f "$tmp"
mkdir -p /run/sshd

action="nothing to do"
if pid=$(daemon_alive "$PIDFILE" sshd); then
    if [[ $changed == 1 ]]; then
        stop_daemon "$PIDFILE" sshd
        action="restarted"
    fi
else
    clear_stale_pidfile "$PIDFILE" sshd || true
    action="started"
fi
if ! daemon_alive "$PIDFILE" sshd >/dev/null; then
    /usr/sbin/sshd -t -f "$CONF" || die "sshd rejects $CONF"
    /usr/sbin/sshd -f "$CONF" -E "$STATE/sshd.log" 9>&-
    wait_for 10 daemon_alive "$PIDFILE" sshd || { tail_logs 20 "$STATE/sshd.log"; die "sshd did not start"; }
fi
probe() {
    ssh -q -o BatchMode=yes -o UserKnownHostsFile="$STATE/known_hosts" -o StrictHostKeyChecking=yes \
        -i "$STATE/client/id_ed25519" -p "$PORT" "$USER_NAME@127.0.0.1" true
}
wait_for 10 probe || { tail_logs 20 "$STATE/sshd.log"; die "cannot log in as $USER_NAME on port $PORT"; }
log "sshd on 127.0.0.1:$PORT ($action), user $USER_NAME"
printf 'SSHD_PORT=%s\nSSHD_USER=%s\nSSHD_HOME=%s\nSSHD_KEY=%s\nSSHD_KNOWN_HOSTS=%s\nSSHD_PIDFILE=%s\n' \
    "$PORT" "$USER_NAME" "$HOME_DIR" "$STATE/client/id_ed25519" "$STATE/known_hosts" "$PIDFILE"
