"""One status poll is ONE SSH round trip for every scheduler: the scheduler's listing goes out in
the transport's gather with the workers' records (status.refresh). Over the real sshd the harness
starts (user dpuuser on 127.0.0.1), against the real SLURM, Grid Engine and Slurm's Torque
wrappers (scheduler: pbs) running on this machine; DRMAA cannot run over SSH (the config refuses
it), so its poll is counted on a transport that records every call."""
import io
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from dpu_slurm import Processor
from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.drmaa import DRMAAScheduler
from dpu_slurm.status import refresh
from dpu_slurm.store import Store
from dpu_slurm.transport.base import Completed, Gathered
from dpu_slurm.transport.local import LocalTransport

HARNESS = Path(__file__).resolve().parent.parent / "harness"
TORQUE_BIN = "/opt/dpu-torque/usr/bin"


def _harness(script: str) -> Dict[str, str]:
    out = subprocess.run(["bash", str(HARNESS / script)], check=True, capture_output=True, text=True,
                         timeout=600).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def sshd() -> Dict[str, str]:
    return _harness("sshd-up.sh")


SCHEDULERS = {
    "slurm": ({}, "slurm-up.sh", ["scancel"]),
    "pbs": ({"flavor": "torque", "bin_dir": TORQUE_BIN}, "torque-up.sh", ["scancel"]),
    "sge": ({}, "sge-up.sh", ["qdel"]),
}


@pytest.fixture(params=[
    pytest.param("slurm", marks=[pytest.mark.sshd, pytest.mark.slurm]),
    pytest.param("pbs", marks=[pytest.mark.sshd, pytest.mark.pbs]),
    pytest.param("sge", marks=[pytest.mark.sshd, pytest.mark.sge]),
])
def remote(request: Any, sshd: Dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    scheduler = request.param
    fields, harness, cancel = SCHEDULERS[scheduler]
    _harness(harness)
    monkeypatch.setenv("DPU_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPU_CONFIG_PATH", str(tmp_path / "cfg"))
    monkeypatch.setenv("DPU_SSH_CONFIG", str(tmp_path / "ssh_config"))
    monkeypatch.chdir(tmp_path)
    workdir = f"dpu/trips-{scheduler}-{uuid.uuid4().hex[:8]}"
    cfg = {
        "name": "remote", "scheduler": scheduler, "workdir": workdir, **fields,
        "host": {"hostname": "127.0.0.1", "port": int(sshd["SSHD_PORT"]), "user": sshd["SSHD_USER"],
                 "identity_file": sshd["SSHD_KEY"], "known_hosts": sshd["SSHD_KNOWN_HOSTS"]},
        "python": "/usr/bin/python3", "min_time": 60,
        "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "remote.yaml").write_text(yaml.safe_dump(cfg))
    dpu = Processor("remote", out=io.StringIO(), session_log=False)
    yield dpu
    for job_id in dpu.get_jobids():
        job = dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run([*cancel, *job.native_ids], check=False, capture_output=True)
    dpu.close()
    shutil.rmtree(Path(sshd["SSHD_HOME"]) / workdir, ignore_errors=True)


def test_a_poll_is_one_ssh_round_trip_for_each_scheduler(remote: Any) -> None:
    ids = [remote.run("Null", n=2, s=10, dpu_mem=100, return_jobid=True) for _ in range(3)]
    ssh = remote._session.transport
    for _ in range(2):  # queued, then (often) running: the same one trip
        trips = ssh.round_trips
        views = remote.get_status(ids)
        assert ssh.round_trips - trips == 1, f"{remote._session.dpu.scheduler}: one poll, one round trip"
        assert {v.status for v in views} <= {"QUEUED", "RUNNING"}, "still listed: the poll was made"
    for job_id in ids:
        view = remote.wait(job_id, timeout=180, interval=0.5)[0]
        assert view.status == "FINISHED" and view.counts.letters == (2, 0, 0, 0, 0)


class Recording(LocalTransport):
    """Counts the calls that would each be one round trip over SSH."""

    def __init__(self, listing: str) -> None:
        self.listing = listing
        self.calls: List[str] = []

    def run(self, argv: Any, input: Any = None, timeout: Any = 120.0) -> Completed:
        self.calls.append("run")
        return Completed(list(argv), 0, self.listing, "")

    def gather(self, argv: Any, files: Any, records: Any, record_name: str, owners: Any = None) -> Gathered:
        self.calls.append("gather")
        return Gathered(Completed(list(argv or []), 0, self.listing, ""), {}, {})


def test_a_drmaa_poll_is_the_drms_listing_in_the_one_gather(tmp_path: Path) -> None:
    cfg = DPUConfig(name="d", scheduler="sge", submit="drmaa", path=tmp_path / "d.yaml",
                    poll={"min_interval": 0, "max_interval": 0, "grace": 30})
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "Null", {}, {"chunk": 2}, 2, 1)
    store.set_jobdir(job_id, str(tmp_path / "job"), "")
    store.submitted(job_id, ["31"])
    xml = ("<job_info><queue_info><job_list><JB_job_number>31</JB_job_number><JB_name>x</JB_name>"
           "<state>r</state><tasks>1</tasks></job_list></queue_info><job_info><job_list>"
           "<JB_job_number>31</JB_job_number><JB_name>x</JB_name><state>qw</state><tasks>2</tasks>"
           "</job_list></job_info></job_info>")
    transport = Recording(xml)
    sched = DRMAAScheduler(cfg, transport)
    refresh(store, sched, cfg, force=True)
    assert transport.calls == ["gather"], "the DRM's qstat goes out with the records, nothing else"
    assert [p.state for p in store.procs(job_id)] == ["RUNNING", "QUEUED"]
