"""Polls in O(changes): scheduler listings with index ranges, and a refresh that looks only at
the processes whose state can have changed (no cluster: outputs as the schedulers print them)."""
from pathlib import Path

import pytest

from dpu_slurm import status
from dpu_slurm.config import DPUConfig
from dpu_slurm.errors import SchedulerError
from dpu_slurm.schedulers.base import QUEUED, RUNNING, Observation, PollRequest, Scheduler
from dpu_slurm.schedulers.pbs import PBSScheduler
from dpu_slurm.schedulers.ranges import Seen, clip, parse_ranges
from dpu_slurm.schedulers.sge import SGEScheduler
from dpu_slurm.schedulers.slurm import SlurmScheduler
from dpu_slurm.status import refresh
from dpu_slurm.store import Job, Store
from dpu_slurm.transport.base import Completed, Gathered
from dpu_slurm.transport.local import LocalTransport


def job(job_id, native_ids, nproc, chunk=100000):
    return Job(job_id, "s", "alice", "Null", {}, {"chunk": chunk, "time_limit": 600}, nproc, 1,
               "submitted", native_ids, "/jobs/x", "", "", 0.0, 1.0, None)


def got(stdout):
    return Gathered(Completed(["q"], 0, stdout, ""), {}, {})


@pytest.mark.parametrize("text,spans", [
    ("5-99999%50", [(5, 99999, 1)]),
    ("[5-99999%50]", [(5, 99999, 1)]),
    ("1-99:2", [(1, 99, 2)]),
    ("0-10:3", [(0, 9, 3)]),            # the last index is one the step reaches
    ("3,7-9,12", [(3, 3, 1), (7, 9, 1), (12, 12, 1)]),
    ("[1-99:2,120-130%4]", [(1, 99, 2), (120, 130, 1)]),
    ("7", [(7, 7, 1)]),
])
def test_parse_ranges_with_steps_and_throttles(text, spans):
    assert parse_ranges(text) == spans


@pytest.mark.parametrize("text", ["N/A", "5-", "9-3", "1-9:0", "a-b"])
def test_parse_ranges_refuses_what_is_not_a_range(text):
    with pytest.raises(SchedulerError, match="range"):
        parse_ranges(text)


def test_clip_keeps_the_step():
    assert clip((1, 99, 2), 10, 50) == (11, 49, 2)
    assert clip((0, 9, 1), 20, 30) is None


def test_seen_answers_for_ranges_without_expanding_them():
    seen = Seen()
    q = Observation(QUEUED)
    seen.add((5, 99999, 1), q)
    seen.add((100001, 100099, 2), q)
    seen[3] = Observation(RUNNING)
    assert len(seen) == 1, "a range is not written out"
    assert seen.total() == 1 + 99995 + 50
    assert seen.get(77777) is q and 100003 in seen and 100002 not in seen and 4 not in seen
    assert seen.unranged([0, 3, 4, 5, 99999, 100000, 100001, 100002, 100200]) == [0, 3, 4, 100000,
                                                                                   100002, 100200]
    assert seen.shifted(-1).get(4) is q and 5 not in seen.shifted(1) and 6 in seen.shifted(1)


def test_squeue_without_r_mixed_ranges_steps_and_throttles():
    """A job of two chunks: pending ranges (throttled, stepped), started elements one by one."""
    s = SlurmScheduler(DPUConfig(name="s", scheduler="slurm", path=None), None)  # type: ignore[arg-type]
    assert "-r" not in s.poll_request([]).argv
    j = job(7, ["100", "101"], 150000, chunk=100000)
    out = s.parse_poll([j], got(
        "100|5-99999%50|PENDING|JobArrayTaskLimit|dpu.alice.7.x.0\n"
        "100|0|RUNNING|None|dpu.alice.7.x.0\n100|3|COMPLETING|None|dpu.alice.7.x.0\n"
        "101|1-49999:2|PENDING|Priority|dpu.alice.7.x.1\n"
        "101|0|RUNNING|None|dpu.alice.7.x.1\n"
        "999|[0-9]|PENDING|Priority|other\n"
        "100|N/A|PENDING|Priority|dpu.alice.7.x.0\n"))
    seen = out[7]
    assert set(out) == {7} and isinstance(seen, Seen)
    assert seen[0].state == RUNNING and seen[3].state == RUNNING and 1 not in seen
    assert seen.get(99999).state == QUEUED and "JobArrayTaskLimit" in seen.get(50).reason
    assert seen.get(100000).state == RUNNING and 100001 in seen and 100002 not in seen
    assert 100000 + 49999 in seen and 100000 + 50001 not in seen, "clipped to the chunk's span"
    assert len(seen) == 3, "only started elements are single entries"


def test_qstat_xml_task_ranges_stay_ranges():
    s = SGEScheduler(DPUConfig(name="g", scheduler="sge", path=None), None)  # type: ignore[arg-type]
    xml = ("<job_info><queue_info><job_list state='running'><JB_job_number>55</JB_job_number>"
           "<JB_name>dpu.alice.7.x.0</JB_name><state>r</state><tasks>1</tasks></job_list>"
           "</queue_info><job_info><job_list state='pending'><JB_job_number>55</JB_job_number>"
           "<JB_name>dpu.alice.7.x.0</JB_name><state>qw</state><tasks>2-100000:1</tasks></job_list>"
           "<job_list state='pending'><JB_job_number>56</JB_job_number><JB_name>dpu.alice.7.x.1</JB_name>"
           "<state>qw</state><tasks>1-9:2</tasks></job_list></job_info></job_info>")
    out = s.parse_poll([job(7, ["55", "56"], 100010, chunk=100000)], got(xml))[7]
    assert out[0].state == RUNNING and len(out) == 1 + 5 - 5, "the qw ranges are not expanded"
    assert out.get(1).state == QUEUED and out.get(99999).state == QUEUED
    assert 100000 in out and 100001 not in out and 100008 in out and 100010 not in out


def test_pbs_array_summary_is_one_range():
    s = PBSScheduler(DPUConfig(name="p", scheduler="pbs", path=None), None)  # type: ignore[arg-type]
    rows = [("77[].server", "alice", "dpu.alice.7.x.0", "Q"), ("77[2].server", "alice", "x", "R")]
    out = s.observations([job(7, ["77[].server"], 50000)], rows)[7]
    assert isinstance(out, Seen) and len(out) == 1, "the summary row stays a range"
    assert out[2].state == RUNNING and out.get(49999).state == QUEUED and 50000 not in out


class Ranged(Scheduler, registered=False):
    """Lists every process of the job as one queued range, and index 3 as running."""

    name = "ranged"

    def submit(self, req):
        raise NotImplementedError

    def cancel(self, job, force):
        raise NotImplementedError

    def poll_request(self, jobs):
        return PollRequest(None, [])

    def parse_poll(self, jobs, got):
        seen = Seen()
        seen.add((0, jobs[0].nproc - 1, 1), Observation(QUEUED, "", "PENDING (Priority)"))
        seen[3] = Observation(RUNNING)
        return {jobs[0].id: seen}


def test_refresh_decides_only_the_processes_that_can_have_changed(tmp_path: Path, monkeypatch):
    cfg = DPUConfig(name="d", scheduler="slurm", path=tmp_path / "d.yaml",
                    poll={"min_interval": 0, "max_interval": 0, "grace": 30})
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "Null", {}, {}, 5000, 1)
    store.set_jobdir(job_id, str(tmp_path / "job"), "")
    store.submitted(job_id, ["1"])
    decided, real = [], status.decide
    monkeypatch.setattr(status, "decide", lambda obs, *a, **k: decided.append(obs) or real(obs, *a, **k))
    refresh(store, Ranged(cfg, LocalTransport()), cfg, force=True)
    assert len(decided) == 1, "the 4,999 queued processes in the range are not looked at one by one"
    counts = store.counts([job_id])[job_id]
    assert (counts.queued, counts.running, counts.done) == (4999, 1, 0)
    decided.clear()
    refresh(store, Ranged(cfg, LocalTransport()), cfg, force=True)
    assert len(decided) == 1, "the running one is looked at again, nothing else"


def test_counters_and_reasons_come_from_group_by(tmp_path: Path):
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "A>B", {}, {}, 6, 2)
    store.update(job_id, [(0, "DONE", "NN", "", None), (1, "DONE", "ES", "boom", None),
                          (2, "DONE", "NN", "all N: not a reason to show", None),
                          (3, "RUNNING", "", "", None), (4, "DONE", "AS", "boom", None),
                          (5, "DONE", "UU", "lost", None)])
    counts = store.counts([job_id, 999])
    assert (counts[job_id].queued, counts[job_id].running, counts[job_id].done) == (0, 1, 5)
    assert counts[job_id].line() == "4/1/1/2/2" and counts[999].line() == "0/0/0/0/0"
    assert store.reason_counts(job_id) == {"boom": 2, "lost": 1}
    assert list(store.reason_counts(job_id)) == ["boom", "lost"]
    assert store.busy_rows(job_id) == {3: (3, "RUNNING", "", "", None)}
    assert store.open_indices(job_id) == [3]


def test_open_indices_from_either_side(tmp_path: Path):
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "A", {}, {}, 10, 1)
    assert store.open_indices(job_id) == list(range(10))
    store.update(job_id, [(i, "DONE", "N", "", None) for i in (0, 4, 9)])
    assert store.open_indices(job_id) == [1, 2, 3, 5, 6, 7, 8]        # few done: the done side
    store.update(job_id, [(i, "DONE", "N", "", None) for i in (1, 2, 3, 5, 6)])
    assert store.open_indices(job_id) == [7, 8]                      # most done: the open side
    assert store.open_indices(12345) == []


def test_started_indices_skip_the_queued(tmp_path: Path):
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "A", {}, {}, 8, 1)
    store.update(job_id, [(6, "RUNNING", "", "", None), (2, "DONE", "N", "", None),
                          (7, "DONE", "E", "x", None)])
    assert store.started_indices(job_id, 10) == [2, 6, 7] and store.started_indices(job_id, 2) == [2, 6]
