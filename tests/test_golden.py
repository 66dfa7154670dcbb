"""Golden job scripts: the rendered script of each example config is checked in; a diff shows
what a change does to every script. Regenerate with DPU_UPDATE_GOLDEN=1 after reviewing."""
import os
from pathlib import Path

import pytest

from dpu_slurm.config import load_file, packaged
from dpu_slurm.schedulers import SubmitRequest, for_dpu
from dpu_slurm.transport.local import LocalTransport

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = sorted(p.name for p in packaged("cluster_configs").glob("*.yaml"))


def request(cfg):
    version = cfg.awe_versions.get(cfg.default_aweversion, {})
    return SubmitRequest(
        job_id=42, user="alice", dpu=cfg.name, sequence="Bias>HotPixels",
        jobdir="/scratch/alice/dpu/jobs/42.abcd1234", store="abcd1234", nproc=2500, time_limit=900, mem=2000,
        partition="short" if cfg.partitions else None, python=cfg.python or "python3",
        pythonpath="/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code",
        setup=list(version.get("setup", [])), env=dict(cfg.env))


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
