"""Parsing squeue and sacct output (no cluster: the outputs are what Slurm 22.05 prints)."""
import logging

from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.base import ENDED, QUEUED, RUNNING
from dpu_slurm.schedulers.slurm import STATE_MAP, SlurmScheduler, hms
from dpu_slurm.status import Record, decide
from dpu_slurm.store import Job
from dpu_slurm.transport.base import Completed, Gathered


class FakeTransport:
    def __init__(self, stdout="", returncode=0, stderr=""):
        self.result = Completed(["x"], returncode, stdout, stderr)
        self.calls = []

    def run(self, argv, *args, **kwargs):
        self.calls.append(list(argv))
        return self.result


def job(job_id, native_ids, nproc, chunk=1000, time_limit=600):
    return Job(job_id, "s", "alice", "Null", {}, {"chunk": chunk, "time_limit": time_limit}, nproc, 1,
               "submitted", native_ids, "/jobs/x", "", "", 0.0, 1.0, None)


def sched(transport=None):
    cfg = DPUConfig(name="s", scheduler="slurm", path=None)  # type: ignore[arg-type]
    return SlurmScheduler(cfg, transport or FakeTransport())


def parse(stdout, jobs):
    got = Gathered(Completed(["squeue"], 0, stdout, ""), {}, {})
    return sched().parse_poll(jobs, got)


def test_every_state_in_the_issue_is_mapped():
    for state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED", "FAILED",
                  "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                  "DEADLINE", "REQUEUED", "RESIZING", "SUSPENDED", "STOPPED"):
        assert state in STATE_MAP


def test_squeue_lines_map_to_processes_with_chunk_offsets():
    jobs = [job(7, ["100", "101"], 1500)]
    out = parse("100|3|RUNNING|None\n101|2|PENDING|Priority\n999|0|RUNNING|None\n", jobs)
    assert out[7][3].state == RUNNING
    assert out[7][1002].state == QUEUED and "Priority" in out[7][1002].reason
    assert set(out) == {7}, "another user's or a non-DPU job is ignored"


def test_unknown_state_is_U_with_a_warning_not_a_crash(caplog):
    with caplog.at_level(logging.WARNING):
        out = parse("100|0|WEIRD_NEW_STATE|None\n", [job(1, ["100"], 1)])
    assert (out[1][0].state, out[1][0].letter) == (ENDED, "U")
    assert "WEIRD_NEW_STATE" in caplog.text


def test_squeue_failure_raises_unreachable_and_changes_nothing():
    import pytest

    from dpu_slurm.errors import Unreachable
    got = Gathered(Completed(["squeue"], 1, "", "Unable to contact slurm controller"), {}, {})
    with pytest.raises(Unreachable, match="Unable to contact"):
        sched().parse_poll([job(1, ["100"], 1)], got)


def test_sacct_history_reads_states_reasons_and_remembers_when_accounting_is_off():
    t = FakeTransport("100_0|FAILED|127:0\n100_1|TIMEOUT|0:15\n100_2|CANCELLED by 0|0:0\n"
                      "55|COMPLETED|0:0\n")
    s = sched(t)
    out = s.history([job(3, ["100"], 3, time_limit=600)])
    assert (out[3][0].letter, out[3][1].letter, out[3][2].letter) == ("E", "A", "S")
    assert "127:0" in out[3][0].reason and "killed after 00:10:00" in out[3][1].reason
    off = sched(FakeTransport("", 1, "Slurm accounting storage is disabled"))
    assert off.history([job(3, ["100"], 3)]) == {}
    off.history([job(3, ["100"], 3)])
    assert len(off.transport.calls) == 1, "sacct is not asked again once accounting is known off"


def test_time_limits_round_up_to_minutes():
    assert (hms(1), hms(60), hms(61), hms(86400 + 60)) == ("00:01:00", "00:01:00", "00:02:00", "1-00:01:00")


def test_decide_merges_scheduler_and_worker_record():
    done = Record("DONE", ["N", "E"], "task B failed")
    assert decide(None, done, 2, young=False) == ("DONE", "NE", "task B failed")
    running = Record("RUNNING", ["N", "RUNNING", None])
    timeout = sched().observe("TIMEOUT", "killed after 00:01:00")
    assert decide(timeout, running, 3, young=False)[1] == "NAS"
    cancelled = sched().observe("CANCELLED")
    assert decide(cancelled, None, 2, young=False)[1] == "SS"
    assert decide(None, None, 2, young=True)[0] == "QUEUED"
    assert decide(None, None, 2, young=False)[1] == "UU"
    assert decide(None, None, 2, young=False, cancelled=True)[1] == "SS"


def _of(job_id, user, native_ids, nproc):
    j = job(job_id, native_ids, nproc)
    j.user = user
    return j


def test_on_the_queue_page_a_card_claiming_another_users_slurm_job_neither_shows_nor_hides_it():
    """mallory's card claims alice's array job 100 (job ids are public and sequential): the
    page polls every user's jobs, and the scheduler's user decides whose job 100 is."""
    alice, mallory = _of(1, "alice", ["100"], 2), _of(2, "mallory", ["100"], 2)
    s = sched()
    s.all_users = True
    assert s.poll_request([]).argv == ["squeue", "-h", "-o", "%F|%K|%T|%r|%u|%j"]
    got = Gathered(Completed(["squeue"], 0, "100|0|PENDING|Priority|alice|dpu.alice.1.cafe0001.0\n"
                                            "100|1|RUNNING|None|alice|dpu.alice.1.cafe0001.0\n", ""), {}, {})
    for jobs in ([alice, mallory], [mallory, alice]):
        out = s.parse_poll(jobs, got)
        assert set(out) == {1} and out[1][0].state == QUEUED and out[1][1].state == RUNNING
    t = FakeTransport("100_0|FAILED|1:0|alice|x\n100_1|COMPLETED|0:0|alice|x\n")
    s = sched(t)
    s.all_users = True
    out = s.history([mallory, alice])
    assert set(out) == {1} and (out[1][0].letter, out[1][1].letter) == ("E", "N")
    assert "User" in t.calls[0][-1]
