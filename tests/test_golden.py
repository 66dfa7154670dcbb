"""Golden job scripts: the rendered script of each example config is checked in; a diff shows
what a change does to every script. Regenerate with DPU_UPDATE_GOLDEN=1 after reviewing."""
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dpu_slurm.config import load_file, packaged
from dpu_slurm.plan import Plan
from dpu_slurm.schedulers import for_dpu
from dpu_slurm.session import submit_request
from dpu_slurm.transport.local import LocalTransport

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = sorted(p.name for p in packaged("cluster_configs").glob("*.yaml"))


def request(cfg):
    """The request session.submit would make (session.submit_request, the one builder), with
    the python pinned so the scripts do not depend on the interpreter running the tests."""
    plan = Plan(sequence="Bias>HotPixels", tasks=[], options={}, processes=[{}] * 2500, estimate=600.0,
                time_limit=900, mem=2000, partition="short" if cfg.partitions else None,
                aweversion=cfg.default_aweversion, send_code=True)
    req = submit_request(cfg, plan, 42, "alice", "/scratch/alice/dpu/jobs/42.abcd1234",
                         "/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code",
                         "abcd1234")
    return replace(req, python=cfg.python or "python3")


def rendered(name):
    cfg = load_file(packaged("cluster_configs") / name)
    sched = for_dpu(cfg, LocalTransport())
    return sched.scripts(request(cfg))


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_script_matches_golden_file(name):
    for script, text in rendered(name).items():
        golden = GOLDEN / f"{Path(name).stem}.{script}"
        if os.environ.get("DPU_UPDATE_GOLDEN"):
            golden.write_text(text)
        assert golden.exists(), f"no golden file {golden}; run with DPU_UPDATE_GOLDEN=1 and review it"
        assert text == golden.read_text(), f"{golden} differs from the rendered script"


def test_every_example_config_has_golden_files():
    stems = {p.name.split(".")[0] for p in GOLDEN.glob("*.sh")}
    assert {Path(n).stem for n in EXAMPLES} <= stems
