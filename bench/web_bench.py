"""`dpu web` with 50 users x 200 jobs in the job index: page latency and memory while 20 API
submitters run. Figures printed, never asserted (goal: p95 < 100 ms, RSS < 150 MB).

The 50 users are real Unix users (harness/bench-users.sh makes dpubench00..49), each owning
their card folder, cards and job folders, as the page's owner checks require. Cards are written
in the format of index.py (Card.dump); 95 % of the jobs have finished (a DONE record per
process), 5 % are running (their runner file says so). The server runs as its own process (its
RSS is what is measured) on the local DPU; the submits are real `POST /api/run` calls.
"""
from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from dpu_slurm import tokens
from dpu_slurm.index import Card
from dpu_slurm.session import open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
USERS = int(os.environ.get("BENCH_WEB_USERS", "50"))
JOBS = int(os.environ.get("BENCH_WEB_JOBS", "200"))
REQUESTS = int(os.environ.get("BENCH_WEB_REQUESTS", "200"))
SUBMITTERS = 20
DPU = "benchweb"


def write_index(root: Path, users: List[str]) -> None:
    """Every user's cards, job folders and worker records, owned by that user."""
    index = root / "work" / "index"
    index.mkdir(parents=True)
    index.chmod(0o1777)
    now = time.time()
    for u, user in enumerate(users):
        pw = pwd.getpwnam(user)
        folder = index / user
        folder.mkdir()
        home = root / "homes" / user
        for j in range(1, JOBS + 1):
            running = j % 20 == 0
            jobdir = home / "jobs" / f"{j}.b{u:07d}"
            (jobdir / "p" / "0").mkdir(parents=True)
            created = now - 86400 * 6 * (JOBS - j) / JOBS - 60
            if running:
                (jobdir / "runner.json").write_text(json.dumps({"pid": None, "states": [["RUNNING", ""]]}))
            else:
                (jobdir / "p" / "0" / "status.json").write_text(json.dumps(
                    {"state": "DONE", "tasks": ["N", "N"], "reason": "", "started": created + 5,
                     "ended": created + 50}))
            card = Card(user=user, store=f"b{u:07d}", job_id=j, dpu=DPU, sequence="ReadNoise",
                        options={"instrument": "WFI", "date": f"2000-04-{j % 28 + 1:02d}", "chip": j % 8},
                        nproc=1, ntasks=2, created=created, submitted=created + 1, jobdir=str(jobdir),
                        native_ids=[str(100000 + j)], chunk=1000, time_limit=600)
            (folder / f"{j}.b{u:07d}.json").write_bytes(card.dump())
        for path in [folder, *folder.iterdir(), home, *home.rglob("*")]:
            os.chown(path, pw.pw_uid, pw.pw_gid)


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def get(conn: http.client.HTTPConnection, path: str) -> Tuple[int, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def rss_kb(pid: int) -> Dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def stop_runners(jobs: Path) -> None:
    """Let the submitted jobs' local runners finish (they run one short Null task), then stop
    the ones left by their recorded pid."""
    pids = []
    for pid_file in jobs.glob("*/runner.pid"):
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    end = time.monotonic() + 60
    while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and str(jobs).encode() in cmdline.read_bytes():
            os.kill(pid, signal.SIGTERM)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if os.geteuid() != 0:
        print("web bench: skipped (needs root to own cards as 50 users)")
        return 0
    subprocess.run(["bash", str(REPO / "harness" / "bench-users.sh")], check=True,
                   env=dict(os.environ, BENCH_USERS=str(USERS)))
    users = [f"dpubench{i:02d}" for i in range(USERS)]
    root = Path(tempfile.mkdtemp(prefix="dpu-web-bench-"))
    root.chmod(0o755)
    os.environ.update(DPU_HOME=str(root / "home"), DPU_CONFIG_PATH=str(root / "cfg"))
    (root / "cfg").mkdir()
    (root / "cfg" / f"{DPU}.yaml").write_text(yaml.safe_dump({
        "name": DPU, "scheduler": "local", "slots": 2, "time_factor": 1, "min_time": 1,
        "workdir": str(root / "work"), "poll": {"min_interval": 2, "max_interval": 10}}))
    t0 = time.perf_counter()
    write_index(root, users)
    print(f"web: index of {USERS} users x {JOBS} jobs written in {time.perf_counter() - t0:.1f} s")
    store = open_store()
    secret, _ = tokens.create(store, pwd.getpwuid(os.getuid()).pw_name, "bench")
    store.close()

    server = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", DPU, "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=str(root), env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert server.stdout is not None
        port = int(re.search(r":(\d+)/", server.stdout.readline()).group(1))  # type: ignore[union-attr]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        while json.loads(get(conn, "/api/queue")[1])["total"] < USERS * JOBS:
            time.sleep(0.2)
        first = time.perf_counter() - t0
        print(f"web: first snapshot with {USERS * JOBS} jobs after {first:.1f} s "
              f"(the page answered meanwhile, from the empty snapshot)")
        idle_rss = rss_kb(server.pid)["VmRSS"]

        stop = threading.Event()
        results: List[int] = []

        def submitter() -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            body = json.dumps({"sequence": "Null", "options": {"m": "bench"}})
            while not stop.is_set():
                c.request("POST", "/api/run", body, {"Authorization": f"Bearer {secret}",
                                                     "Content-Type": "application/json"})
                resp = c.getresponse()
                resp.read()
                results.append(resp.status)

        threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
        for t in threads:
            t.start()
        samples: List[int] = []
        timings: Dict[str, List[float]] = {}
        for path in ("/", "/api/queue", f"/api/queue?user={users[7]}"):
            times = timings.setdefault(path, [])
            for _ in range(REQUESTS):
                t1 = time.perf_counter()
                status, _ = get(conn, path)
                times.append(1000 * (time.perf_counter() - t1))
                assert status == 200, status
                if len(times) % 20 == 0:
                    samples.append(rss_kb(server.pid)["VmRSS"])
        during = len(results)
        stop.set()
        for t in threads:
            t.join(300)
        mem = rss_kb(server.pid)
        for path, times in timings.items():
            print(f"web: GET {path}: p50 {statistics.median(times):.1f} ms, p95 "
                  f"{percentile(times, 0.95):.1f} ms, max {max(times):.1f} ms over {len(times)} requests, "
                  f"{SUBMITTERS} submitters running")
        print(f"web: submits: {during} answered while the GETs ran ({len(results)} in all, statuses "
              f"{sorted(set(results))})")
        print(f"web: server RSS: {idle_rss / 1024:.0f} MB after the first snapshot, max "
              f"{max(samples) / 1024:.0f} MB while submitting, peak (VmHWM) {mem['VmHWM'] / 1024:.0f} MB")
        ok = all(s == 201 for s in results)
    finally:
        server.terminate()
        server.wait(30)
        stop_runners(root / "work" / "jobs")
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
