"""Adding a scheduler is one module and one template: the registry gives config validation its
names, ``for_dpu`` its class, and the contract is checked when the class is defined."""
import importlib.util
import sys

import pytest

from dpu_slurm.config import load_file
from dpu_slurm.errors import ConfigError
from dpu_slurm.schedulers import REGISTRY, SubmitRequest, for_dpu, names
from dpu_slurm.schedulers.base import PollRequest, Scheduler
from dpu_slurm.transport.local import LocalTransport

MODULE = '''
"""A tiny scheduler: `toyq submit FILE` prints an id, `toyq list` prints 'id state name' lines."""
from dpu_slurm.schedulers.base import ENDED, QUEUED, RUNNING, PollRequest, Scheduler


class ToyScheduler(Scheduler):
    name = "toyq"
    STATE_MAP = {"WAIT": (QUEUED, ""), "RUN": (RUNNING, ""), "DONE": (ENDED, "N")}

    def script_context(self, req, k, offset, count):
        return {"minutes": max(1, req.time_limit // 60)}

    def submit_argv(self, req, name, text):
        return [self.cmd("toyq"), "submit", f"{req.jobdir}/{name}"]

    def poll_request(self, jobs):
        return PollRequest([self.cmd("toyq"), "list"])

    def parse_poll(self, jobs, got):
        return {}

    def cancel_argv(self, job, force, natives):
        return [[self.cmd("toyq"), "kill", *natives]]
'''
TEMPLATE = '''#!/bin/bash
# toyq job {{ job_id }}: {{ count }} processes from {{ offset }}, {{ minutes }} min
#TOYQ name={{ tag|directive }}
exec {{ python }} -m dpu_slurm.worker {{ jobdir }} "$(( {{ offset }} + TOYQ_INDEX ))"
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "toyq_scheduler.py").write_text(MODULE)
    (folder / "toyq.sh.j2").write_text(TEMPLATE)
    spec = importlib.util.spec_from_file_location("toyq_scheduler", folder / "toyq_scheduler.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toyq_scheduler", module)
    spec.loader.exec_module(module)  # defining the class registers it
    yield module
    REGISTRY.pop("toyq", None)


def test_a_scheduler_module_and_its_template_are_all_it_takes(toy, tmp_path):
    assert "toyq" in names()
    path = tmp_path / "toy.yaml"
    path.write_text("name: toy\nscheduler: toyq\nmax_array_size: 2\n")
    cfg = load_file(path)  # the config accepts the new name
    sched = for_dpu(cfg, LocalTransport())
    assert type(sched).__name__ == "ToyScheduler"
    req = SubmitRequest(job_id=7, user="alice", dpu="toy", sequence="Null", jobdir="/w/j", nproc=3,
                        time_limit=600, mem=100, partition=None, python="python3", pythonpath="/p",
                        store="s1")
    scripts = sched.scripts(req)
    assert list(scripts) == ["job-0.sh", "job-1.sh"], "chunked by the base class"
    assert "#TOYQ name=dpu.alice.7.s1.1\n" in scripts["job-1.sh"]
    assert "1 processes from 2, 10 min" in scripts["job-1.sh"]
    assert sched.submit_argv(req, "job-0.sh", "") == ["toyq", "submit", "/w/j/job-0.sh"]


def test_names_not_registered_are_refused_with_the_registered_ones(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("name: toy\nscheduler: toyq\n")
    with pytest.raises(ConfigError, match=r"allowed: local, slurm, pbs, sge$"):
        load_file(path)


def test_the_contract_is_checked_when_the_class_is_defined():
    missing = "must define parse_poll, submit or submit_argv, cancel or cancel_argv"
    with pytest.raises(TypeError, match=missing):
        class Half(Scheduler, registered=False):
            name = "half"

            def poll_request(self, jobs):
                return PollRequest(None)
    assert "half" not in REGISTRY

    class Partial(Scheduler, abstract=True):  # a shared base for several schedulers
        pass
