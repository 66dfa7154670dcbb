"""SSH figures against the harness's sshd on 127.0.0.1 (harness/sshd-up.sh) and the local SLURM.

Prints, in one run: shipping a 100 MB AWEPIPE tree beside OpenSSH scp of the same tarball (a
ratio); a second run with unchanged code (bundle bytes sent, round trips); per-command latency
on the warm connection beside a fresh exec_command; round trips of a status poll of 100 jobs.
"""
from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dpu_slurm import Processor, bundle
from dpu_slurm.config import get_dpu
from dpu_slurm.session import awepipe_path
from dpu_slurm.transport.ssh import SSHTransport

MB = int(os.environ.get("BENCH_TREE_MB", "100"))


def harness() -> dict[str, str]:
    out = subprocess.run(["bash", str(Path(__file__).resolve().parent.parent / "harness" / "sshd-up.sh")],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main() -> None:
    env = harness()
    root = Path(tempfile.mkdtemp(prefix="dpu-sshbench-"))
    os.environ.update(DPU_HOME=str(root / "home"), DPU_CONFIG_PATH=str(root / "cfg"))
    (root / "cfg").mkdir()
    workdir = f"dpu/bench-{os.getpid()}"
    (root / "cfg" / "remote.yaml").write_text(yaml.safe_dump({
        "name": "remote", "scheduler": "slurm", "workdir": workdir, "python": "/usr/bin/python3",
        "host": {"hostname": "127.0.0.1", "port": int(env["SSHD_PORT"]), "user": env["SSHD_USER"],
                 "identity_file": env["SSHD_KEY"], "known_hosts": env["SSHD_KNOWN_HOSTS"]},
        "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0}}))
    os.chdir(root)
    remote_root = Path(env["SSHD_HOME"]) / workdir

    tree = root / "awepipe"
    shutil.copytree(awepipe_path(), tree)
    for i in range(MB):
        (tree / f"data{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    t0 = time.perf_counter()
    b = bundle.build(tree, root / "cache")
    build_s = time.perf_counter() - t0

    t = SSHTransport(get_dpu("remote"))
    t.run(["true"])
    ssh = ["-P", env["SSHD_PORT"], "-i", env["SSHD_KEY"],
           "-o", f"UserKnownHostsFile={env['SSHD_KNOWN_HOSTS']}"]
    scp_times, put_times = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(["scp", "-q", *ssh, str(b.path), f"{env['SSHD_USER']}@127.0.0.1:/tmp/dpu-scp.bin"],
                       check=True)
        scp_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        t._put(t._ensure(), b.path, "/tmp/dpu-put.bin", "/tmp")
        put_times.append(time.perf_counter() - t0)
    scp_s, put_s = min(scp_times), min(put_times)
    t0 = time.perf_counter()
    t.ensure_bundle(b, f"{remote_root}/bundles")
    ship_s = time.perf_counter() - t0
    trips, sent = t.round_trips, t.upload_bytes
    t0 = time.perf_counter()
    t.ensure_bundle(b, f"{remote_root}/bundles")
    again_s = time.perf_counter() - t0
    again = (t.upload_bytes - sent, t.round_trips - trips)

    warm = []
    for _ in range(50):
        t0 = time.perf_counter()
        t.run(["true"])
        warm.append(time.perf_counter() - t0)
    fresh = []
    for _ in range(5):
        f = SSHTransport(get_dpu("remote"))
        client = f._ensure()
        t0 = time.perf_counter()
        _, stdout, _ = client.exec_command("true")
        stdout.channel.recv_exit_status()
        fresh.append(time.perf_counter() - t0)
        f.close()

    dpu = Processor("remote", out=io.StringIO(), session_log=False)
    ids = [dpu.run("Null", n=2, dpu_mem=20, return_jobid=True) for _ in range(100)]
    st = dpu._session.transport
    assert isinstance(st, SSHTransport)
    before = st.round_trips
    t0 = time.perf_counter()
    dpu.get_status(ids)
    poll_s = time.perf_counter() - t0
    poll_trips = st.round_trips - before
    for job_id in ids:
        subprocess.run(["scancel", *dpu._store.job(job_id).native_ids], check=False)
    dpu.close()

    mb = b.size / 1e6
    print(f"ssh: bundle of a {MB} MB tree: {mb:.1f} MB tarball, built in {build_s:.2f} s")
    print(f"ssh: upload {mb:.1f} MB: scp {scp_s:.3f} s ({mb / scp_s:.0f} MB/s), dpu_slurm {put_s:.3f} s "
          f"({mb / put_s:.0f} MB/s): {scp_s / put_s:.2f}x scp throughput (best of 3 each)")
    print(f"ssh: first shipping (check + upload + remote sha256, unpack, tree hash): {ship_s:.3f} s")
    print(f"ssh: unchanged code: {again[0]} bundle bytes sent, {again[1]} round trip(s), {again_s:.3f} s")
    print(f"ssh: command on the warm connection: median {statistics.median(warm) * 1000:.1f} ms "
          f"(fresh exec_command: median {statistics.median(fresh) * 1000:.1f} ms)")
    print(f"ssh: get_status of {len(ids)} jobs over SSH: {poll_trips} round trip(s), {poll_s:.3f} s")
    shutil.rmtree(remote_root, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
