"""A process nobody knows (not listed, no final worker record) is given the grace before it is
called U: accounting and shared file systems lag, and a just-submitted job may not show yet."""
from pathlib import Path

from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.base import ENDED, Observation, PollRequest, Scheduler
from dpu_slurm.status import refresh
from dpu_slurm.store import Store
from dpu_slurm.transport.local import LocalTransport


class Silent(Scheduler, registered=False):
    """Lists nothing; its accounting answers what the test puts in `remembered`."""

    name = "silent"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.remembered = {}
        self.history_calls = 0

    def submit(self, req):
        raise NotImplementedError

    def cancel(self, job, force):
        raise NotImplementedError

    def poll_request(self, jobs):
        return PollRequest(None, [])

    def parse_poll(self, jobs, got):
        return {}

    def history(self, jobs):
        self.history_calls += 1
        return self.remembered


def setup(tmp_path: Path):
    cfg = DPUConfig(name="d", scheduler="slurm", path=tmp_path / "d.yaml",
                    poll={"min_interval": 0, "max_interval": 0, "grace": 30})
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "Null", {}, {}, 2, 1)
    store.set_jobdir(job_id, str(tmp_path / "job"), "")
    store.submitted(job_id, ["1"])
    return cfg, store, job_id, Silent(cfg, LocalTransport())


def test_unknown_process_waits_out_the_grace_then_is_U(tmp_path, monkeypatch):
    cfg, store, job_id, sched = setup(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr("dpu_slurm.status.time.time", lambda: clock[0])
    refresh(store, sched, cfg, force=True)
    procs = store.procs(job_id)
    assert [p.state for p in procs] == ["QUEUED", "QUEUED"] and procs[0].missing == 1000.0
    clock[0] = 1029.0
    refresh(store, sched, cfg, force=True)
    assert [p.state for p in store.procs(job_id)] == ["QUEUED", "QUEUED"]
    assert sched.history_calls == 0, "accounting is not asked before the grace has passed"
    clock[0] = 1031.0
    refresh(store, sched, cfg, force=True)
    assert [(p.state, p.outcome) for p in store.procs(job_id)] == [("DONE", "U"), ("DONE", "U")]
    assert sched.history_calls == 1


def test_accounting_that_catches_up_within_the_grace_decides(tmp_path, monkeypatch):
    cfg, store, job_id, sched = setup(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr("dpu_slurm.status.time.time", lambda: clock[0])
    refresh(store, sched, cfg, force=True)
    sched.remembered = {job_id: {0: Observation(ENDED, "E", "FAILED: exit code 127:0"),
                                 1: Observation(ENDED, "N", "COMPLETED")}}
    clock[0] = 1040.0
    refresh(store, sched, cfg, force=True)
    p0, p1 = store.procs(job_id)
    assert (p0.state, p0.outcome, p0.missing) == ("DONE", "E", None)
    assert p1.outcome == "U", "COMPLETED without the worker's record cannot be told from a loss"
