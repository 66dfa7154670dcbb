"""Pieces of the scheduler contract: bin_dir for every SLURM command, the state Enums' values."""
import json
from pathlib import Path

from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.slurm import SlurmScheduler
from dpu_slurm.states import (
    OBS_TERMINAL,
    PROC_TERMINAL,
    STATUS_TERMINAL,
    JobStatus,
    ObsState,
    Phase,
    ProcState,
)
from dpu_slurm.status import decide, job_status
from dpu_slurm.store import Job
from dpu_slurm.transport.local import LocalTransport


def job(native="100"):
    return Job(id=1, dpu="s", user="alice", sequence="Null", options={}, dpu_options={"chunk": 2},
               nproc=2, ntasks=1, phase="submitted", native_ids=[native], jobdir="/j", bundle="",
               error="", created=0.0, submitted=0.0, finished=None)


def test_slurm_takes_every_command_from_bin_dir():
    cfg = DPUConfig(name="s", scheduler="slurm", path=Path("s.yaml"), bin_dir="/opt/slurm/bin")
    sched = SlurmScheduler(cfg, LocalTransport())
    assert sched.poll_request([job()]).argv[0] == "/opt/slurm/bin/squeue"
    assert sched.history_request([job()])[0] == "/opt/slurm/bin/sacct"
    assert sched.cancel_argv(job(), False, ["100"]) == [["/opt/slurm/bin/scancel", "--state=PENDING", "100"]]


def test_states_are_str_enums_whose_stored_and_json_values_are_the_old_strings():
    assert json.dumps([job_status(2, 0, 2), Phase.NOT_SUBMITTED, JobStatus.NOT_SUBMITTED]) == \
        '["FINISHED", "not_submitted", "NOT SUBMITTED"]'
    state, letters, _ = decide(None, None, 1, young=False)
    assert state == "DONE" and state is ProcState.DONE and f"{state}" == "DONE" and letters == "U"
    assert OBS_TERMINAL == {ObsState.ENDED} and PROC_TERMINAL == {"DONE"}
    assert STATUS_TERMINAL == {"FINISHED", "NOT SUBMITTED"}
