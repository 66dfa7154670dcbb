"""send_code=False runs the DPU's installed version (dpu_aweversion) instead of shipping code."""
import io
import tarfile

import pytest

from dpu_slurm import Processor
from dpu_slurm.errors import DPUError


def test_packaged_local_dpu_runs_the_installed_example_without_shipping_code(env):
    dpu = Processor("local", out=io.StringIO(), session_log=False)
    job_id = dpu.run("Null", m="installed", C=1, send_code=False, return_jobid=True)
    assert dpu.wait(job_id, timeout=60)[0].ok
    job = dpu._store.job(job_id)
    with tarfile.open(env.home / "bundles" / f"{job.bundle}.tar.gz") as tar:
        names = tar.getnames()
    assert names and not any(n.startswith("code/") for n in names), "only the worker travels"
    assert dpu.get_job_result(job_id)[0]["message"] == "installed"


def test_send_code_false_without_an_installed_path_says_what_to_configure(env):
    env.write_dpu()
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    with pytest.raises(DPUError, match="awe_versions"):
        dpu.run("Null", send_code=False)
    assert dpu.get_jobids() == [], "nothing recorded for a run refused before submission"
