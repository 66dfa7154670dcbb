"""Golden job scripts of a DPU with ``requeue:``: the warning-signal and requeue lines each
scheduler gets (SLURM --signal/--requeue, Grid Engine -notify, PBS Pro and Torque not rerunnable),
and the environment the worker reads. Regenerate with DPU_UPDATE_GOLDEN=1 after reviewing."""
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dpu_slurm.config import DPUConfig, load_file, packaged
from dpu_slurm.schedulers import for_dpu
from dpu_slurm.transport.local import LocalTransport
from tests.test_golden import request

GOLDEN = Path(__file__).parent / "golden"
REQUEUE = {"max": 2, "warn": 120}


def config(name: str) -> DPUConfig:
    if name == "sge-cli":  # no example config submits to Grid Engine with qsub
        return DPUConfig(name="sge", scheduler="sge", path=Path("sge.yaml"), requeue=REQUEUE,
                         partitions=[{"name": "short", "max_time": 3600, "max_mem": 4000}],
                         bin_dir="/opt/sge/bin")
    cfg = load_file(packaged("cluster_configs") / f"example-{name}.yaml")
    return replace(cfg, requeue=REQUEUE, max_array_size=5000, bin_dir="/opt/sched/bin")


@pytest.mark.parametrize("name", ["slurm", "sge-cli", "pbspro", "torque"])
def test_requeue_lines_match_golden_file(name: str) -> None:
    cfg = config(name)
    scripts = for_dpu(cfg, LocalTransport()).scripts(request(cfg))
    text = next(iter(scripts.values()))
    golden = GOLDEN / f"requeue-{name}.job-0.sh"
    if os.environ.get("DPU_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs from the rendered script"


def test_signal_directives_per_scheduler() -> None:
    """What each scheduler is asked for, independent of the golden files' other lines."""
    def text(name: str) -> str:
        cfg = config(name)
        return next(iter(for_dpu(cfg, LocalTransport()).scripts(request(cfg)).values()))
    slurm = text("slurm")
    assert "#SBATCH --signal=B:USR1@120\n" in slurm and "#SBATCH --requeue\n" in slurm
    assert "export DPU_REQUEUE=slurm DPU_REQUEUE_MAX=2\n" in slurm
    assert "export DPU_SCONTROL=/opt/sched/bin/scontrol\n" in slurm
    sge = text("sge-cli")
    assert "#$ -notify\n" in sge and "#$ -r y\n" in sge and "export DPU_REQUEUE=sge " in sge
    for flavor in ("pbspro", "torque"):
        pbs = text(flavor)
        assert "#PBS -r n\n" in pbs and "export DPU_REQUEUE='' DPU_REQUEUE_MAX=2\n" in pbs


def test_no_requeue_lines_without_the_key() -> None:
    cfg = replace(config("slurm"), requeue={})
    text = next(iter(for_dpu(cfg, LocalTransport()).scripts(request(cfg)).values()))
    assert "--signal" not in text and "DPU_REQUEUE" not in text and "--requeue" not in text
