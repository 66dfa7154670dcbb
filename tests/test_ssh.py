"""A remote SLURM DPU through the real OpenSSH server the harness starts on 127.0.0.1."""
import io
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from dpu_slurm import Processor, bundle
from dpu_slurm.config import get_dpu
from dpu_slurm.errors import HostKeyError
from dpu_slurm.session import awepipe_path
from dpu_slurm.transport.ssh import SSHTransport

pytestmark = [pytest.mark.sshd, pytest.mark.slurm]
HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _up():
    out = subprocess.run(["bash", str(HARNESS / "sshd-up.sh")], check=True, capture_output=True,
                         text=True, timeout=600).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def sshd():
    subprocess.run(["bash", str(HARNESS / "slurm-up.sh")], check=True, timeout=600)
    return _up()


@pytest.fixture
def remote(sshd, tmp_path, monkeypatch):
    """A fresh remote DPU (own workdir on the remote) and a Processor on it."""
    monkeypatch.setenv("DPU_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPU_CONFIG_PATH", str(tmp_path / "cfg"))
    monkeypatch.setenv("DPU_SSH_CONFIG", str(tmp_path / "ssh_config"))
    monkeypatch.chdir(tmp_path)
    tag = uuid.uuid4().hex[:8]
    cfg = {
        "name": "remote", "scheduler": "slurm", "workdir": f"dpu/test-{tag}",
        "host": {"hostname": "127.0.0.1", "port": int(sshd["SSHD_PORT"]), "user": sshd["SSHD_USER"],
                 "identity_file": sshd["SSHD_KEY"], "known_hosts": sshd["SSHD_KNOWN_HOSTS"]},
        "python": "/usr/bin/python3", "min_time": 60,
        "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
    }
    (tmp_path / "cfg").mkdir()
    write_dpu(tmp_path, cfg)
    out = io.StringIO()
    dpu = Processor("remote", out=out, session_log=False)
    dpu.out = out
    dpu.remote_root = Path(sshd["SSHD_HOME"]) / cfg["workdir"]
    dpu.cfg = cfg
    yield dpu
    for job_id in dpu.get_jobids():
        job = dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["scancel", *job.native_ids], check=False)
    dpu.close()
    shutil.rmtree(dpu.remote_root, ignore_errors=True)


def write_dpu(tmp_path, cfg):
    (tmp_path / "cfg" / f"{cfg['name']}.yaml").write_text(yaml.safe_dump(cfg))


def transport(dpu):
    return dpu._session.transport


def finished(dpu, job_id, timeout=120):
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status}"
    return view


def test_run_status_logs_result_over_ssh(remote):
    job_id = remote.run("ReadNoise", i="WFI", c="ccd52", d="2000-04-28", C=1, dpu_mem=100,
                        return_jobid=True)
    assert finished(remote, job_id).counts.letters == (1, 0, 0, 0, 0)
    job = remote._store.job(job_id)
    assert job.jobdir.startswith(str(remote.remote_root))
    assert (Path(job.jobdir) / "p" / "0" / "status.json").stat().st_uid != 0, "ran as the remote user"
    assert remote.get_job_result(job_id)[0]["chip"] == "ccd52"
    assert any("The read noise (ADU) for ccd ccd52" in line for line in remote.get_logs(job_id))


def test_unchanged_code_costs_one_round_trip_and_no_upload(remote):
    remote.run("Null", dpu_mem=50)
    t = transport(remote)
    b = bundle.build(awepipe_path(), Path(os.environ["DPU_HOME"]) / "bundles")
    trips, uploaded = t.round_trips, t.upload_bytes
    t.ensure_bundle(b, f"{remote.remote_root}/bundles")
    assert (t.round_trips - trips, t.upload_bytes - uploaded) == (1, 0)


def test_a_status_poll_of_many_jobs_is_one_round_trip(remote):
    ids = [remote.run("Null", n=2, dpu_mem=20, return_jobid=True) for _ in range(10)]
    t = transport(remote)
    trips = t.round_trips
    remote.get_status(ids)
    assert t.round_trips - trips == 1
    for job_id in ids:
        assert finished(remote, job_id).counts.letters == (2, 0, 0, 0, 0)


def test_send_code_false_uses_the_installed_version(remote, tmp_path, sshd):
    installed = Path(sshd["SSHD_HOME"]) / f"awe-{uuid.uuid4().hex[:6]}"
    shutil.copytree(awepipe_path(), installed)
    subprocess.run(["chown", "-R", f"{sshd['SSHD_USER']}:", str(installed)], check=True)
    try:
        cfg = dict(remote.cfg, awe_versions={"master": {"path": str(installed), "setup": ["true"]}})
        write_dpu(tmp_path, cfg)
        remote.select_dpu("remote")
        job_id = remote.run("Null", m="from the installed code", C=1, send_code=False,
                            dpu_mem=50, return_jobid=True)
        assert finished(remote, job_id).counts.letters == (1, 0, 0, 0, 0)
        job = remote._store.job(job_id)
        shipped = remote.remote_root / "bundles" / job.bundle
        assert not (shipped / "code").exists(), "send_code=False must not ship the code"
        assert remote.get_job_result(job_id)[0]["message"] == "from the installed code"
    finally:
        shutil.rmtree(installed, ignore_errors=True)


def test_cancel_over_ssh(remote):
    blocker = remote.run("Null", s=120, n=40, dpu_mem=50, return_jobid=True)
    waiting = remote.run("Null", n=2, dpu_mem=50, return_jobid=True)
    deadline = time.monotonic() + 60
    while remote.get_status(waiting)[0].status != "QUEUED" or not any(
            p.state == "RUNNING" for p in remote._store.procs(blocker)):
        assert time.monotonic() < deadline
        remote.get_status(blocker)
        time.sleep(0.5)
    remote.cancel_job(waiting)
    assert finished(remote, waiting).counts.letters == (0, 0, 0, 2, 0)
    remote.cancel_job(blocker, force=True)
    assert finished(remote, blocker).counts.letters[2] >= 1


def test_hostile_values_over_ssh(remote, tmp_path):
    marker = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    message = f"it's \"$(touch {marker})\" `touch {marker}`; touch {marker}\n\u00e9\u4e2d \\x" + "y" * 10_000
    job_id = remote.run("Null", m=message, C=1, dpu_mem=50, return_jobid=True)
    finished(remote, job_id)
    assert remote.get_job_result(job_id)[0]["message"] == message
    assert not marker.exists()


def test_unknown_host_key_is_refused_with_its_fingerprint(remote, tmp_path):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    cfg = dict(remote.cfg, host=dict(remote.cfg["host"], known_hosts=str(empty)))
    write_dpu(tmp_path, cfg)
    t = SSHTransport(get_dpu("remote"))
    with pytest.raises(HostKeyError, match=r"SHA256:\S+.*ssh-keyscan -p \d+ 127.0.0.1"):
        t.run(["true"])
    assert empty.read_text() == "", "an unknown key must never be written to known_hosts"


def test_changed_host_key_is_refused(remote, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    port = remote.cfg["host"]["port"]
    kh = tmp_path / "known_hosts_wrong"
    kh.write_text(f"[127.0.0.1]:{port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    cfg = dict(remote.cfg, host=dict(remote.cfg["host"], known_hosts=str(kh)))
    write_dpu(tmp_path, cfg)
    with pytest.raises(HostKeyError, match="CHANGED"):
        SSHTransport(get_dpu("remote")).run(["true"])


def test_ssh_config_alias_and_proxy_jump(remote, tmp_path, sshd):
    (tmp_path / "ssh_config").write_text(
        f"Host dpucluster\n  HostName 127.0.0.1\n  Port {sshd['SSHD_PORT']}\n  User {sshd['SSHD_USER']}\n"
        f"  IdentityFile {sshd['SSHD_KEY']}\n  UserKnownHostsFile {sshd['SSHD_KNOWN_HOSTS']}\n")
    write_dpu(tmp_path, dict(remote.cfg, host={"hostname": "dpucluster"}))
    t = SSHTransport(get_dpu("remote"))
    assert t.run(["whoami"]).stdout.strip() == sshd["SSHD_USER"]
    t.close()
    jump = f"{sshd['SSHD_USER']}@127.0.0.1:{sshd['SSHD_PORT']}"
    write_dpu(tmp_path, dict(remote.cfg, host=dict(remote.cfg["host"], proxy_jump=jump)))
    t = SSHTransport(get_dpu("remote"))
    assert t.run(["whoami"]).stdout.strip() == sshd["SSHD_USER"]
    assert len(t._jumps) == 1, "the connection went through the jump host"
    t.close()


def _sshd_children(master_pid):
    """The per-connection sshd processes (what a network drop would take away): every sshd
    below the listener, the privileged monitor AND its unprivileged child that holds the
    socket (killing the monitor alone can leave the connection serving for a while)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        if name == "sshd":
            parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    kids, frontier = [], {master_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        kids.extend(sorted(frontier))
    return kids


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # went with its parent
            pass


def _drop_connections(sshd):
    master = int(Path(sshd["SSHD_PIDFILE"]).read_text().split()[0])
    _kill(_sshd_children(master))


def test_connection_killed_mid_upload_retries_to_one_correct_bundle(remote, tmp_path, sshd):
    tree = tmp_path / "awepipe"
    shutil.copytree(awepipe_path(), tree)
    (tree / "blob.bin").write_bytes(os.urandom(8 << 20))
    b = bundle.build(tree, tmp_path / "cache")
    t = transport(remote)
    t.backoff = (0.2,)
    fired = []

    def progress(sent, size):
        if not fired and sent >= (2 << 20):
            fired.append(sent)
            _drop_connections(sshd)

    t.progress = progress
    root = f"{remote.remote_root}/bundles"
    final = t.ensure_bundle(b, root)
    assert fired, "the connection was dropped during the upload"
    entries = sorted(os.listdir(root))
    assert entries == [b.digest], f"exactly one bundle and no partial files, got {entries}"
    assert (Path(final) / "code" / "blob.bin").read_bytes() == (tree / "blob.bin").read_bytes()
    assert t.helper({"check_bundle": [final, b.digest]})["bundle"] == "ok"


def test_altered_bundle_is_detected_and_uploaded_again(remote):
    job_id = remote.run("Null", dpu_mem=50, return_jobid=True)
    digest = remote._store.job(job_id).bundle
    victim = remote.remote_root / "bundles" / digest / "code" / "awepipe" / "null.py"
    good = victim.read_bytes()
    victim.write_bytes(b"raise SystemExit('tampered')\n")
    t = transport(remote)
    uploaded = t.upload_bytes
    job2 = remote.run("Null", C=1, dpu_mem=50, return_jobid=True)
    assert t.upload_bytes > uploaded, "the altered bundle was uploaded again"
    assert victim.read_bytes() == good
    assert finished(remote, job2).counts.letters == (1, 0, 0, 0, 0)


def test_two_submitters_shipping_the_same_bundle_at_once(remote, tmp_path):
    tree = tmp_path / "awepipe"
    shutil.copytree(awepipe_path(), tree)
    (tree / "blob.bin").write_bytes(os.urandom(4 << 20))
    b = bundle.build(tree, tmp_path / "cache")
    root = f"{remote.remote_root}/bundles-race"
    results, errors = [], []

    def ship():
        t = SSHTransport(get_dpu("remote"))
        try:
            results.append(t.ensure_bundle(b, root))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            t.close()

    threads = [threading.Thread(target=ship) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors and len(results) == 3
    assert sorted(os.listdir(root)) == [b.digest]
    assert SSHTransport(get_dpu("remote")).helper({"check_bundle": [results[0], b.digest]})["bundle"] == "ok"


def test_sshd_down_during_polling_marks_nothing_failed_and_recovers(remote, sshd):
    job_id = remote.run("Null", s=3, dpu_mem=50, return_jobid=True)
    t = transport(remote)
    t.backoff = (0.1, 0.2)
    t.run(["true"])  # the connection is up before the server goes away
    master = int(Path(sshd["SSHD_PIDFILE"]).read_text().split()[0])
    sessions = _sshd_children(master)
    subprocess.run(["bash", str(HARNESS / "sshd-down.sh")], check=True)
    _kill(sessions)  # the server's end of our connection goes with it
    try:
        view = remote.get_status(job_id)[0]
        assert "unreachable" in remote.out.getvalue()
        assert view.status in ("QUEUED", "RUNNING")
        assert all(p.state != "DONE" for p in remote._store.procs(job_id)), "no process marked ended"
    finally:
        _up()
    assert finished(remote, job_id).counts.letters == (1, 0, 0, 0, 0)


def test_cleanup_keeps_bundles_of_active_jobs(remote):
    active = remote.run("Null", s=60, dpu_mem=50, return_jobid=True)
    keep = remote._store.job(active).bundle
    root = remote.remote_root / "bundles"
    stale = root / ("0" * 64)
    stale.mkdir()
    os.utime(stale, (time.time() - 30 * 86400,) * 2)
    os.utime(root / keep, (time.time() - 30 * 86400,) * 2)
    removed = remote.cleanup(older_than_days=7)
    assert removed == [stale.name]
    assert (root / keep).is_dir()
    remote.cancel_job(active, force=True)


def test_key_from_ssh_agent(remote, tmp_path, sshd):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", sshd["SSHD_KEY"]], env=env, check=True)
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        host = {k: v for k, v in remote.cfg["host"].items() if k != "identity_file"}
        write_dpu(tmp_path, dict(remote.cfg, host=host))
        t = SSHTransport(get_dpu("remote"))
        assert t.endpoint.identity_files == []
        assert t.run(["whoami"]).stdout.strip() == sshd["SSHD_USER"]
        t.close()
    finally:
        os.environ.pop("SSH_AUTH_SOCK", None)
        agent.terminate()
        agent.wait(10)


def test_the_card_is_filed_under_the_remote_login_and_the_page_shows_the_job_once(remote, sshd):
    from dpu_slurm.web.mirror import Mirror

    job_id = remote.run("Null", dpu_mem=50, return_jobid=True)
    finished(remote, job_id)
    user = sshd["SSHD_USER"]   # the local user is root: the card folder must be the login's
    cards = list((remote.remote_root / "index" / user).glob("*.json"))
    assert len(cards) == 1 and cards[0].stat().st_uid == Path(sshd["SSHD_HOME"]).stat().st_uid
    page = Mirror(get_dpu("remote"), remote._store)
    try:
        page.refresh(force=True)
        rows = page.rows()
        assert [(r.user, r.job_id, r.status) for r in rows] == [(user, job_id, "FINISHED")]
        assert page.warnings == []
        assert any("Null done" in line for line in page.job(rows[0].key)["processes"][0]["log"])
    finally:
        page.close()
