"""A rerun's resources (regrow.py): --auto's doubling, the cap at the DPU's largest partition and
the partition that takes the result; and a DRMAA rerun's task -> index mapping (bulk_map.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dpu_slurm.config import DPUConfig
from dpu_slurm.errors import RerunRefused
from dpu_slurm.regrow import auto_factors, grow, killed_by
from dpu_slurm.schedulers.bulk_map import remap
from dpu_slurm.store import Proc, Store

PARTS = [{"name": "short", "max_time": 3600, "max_mem": 4000},
         {"name": "long", "max_time": 86400, "max_mem": 16000}]


def dpu(**kw: object) -> DPUConfig:
    return DPUConfig(name="c", scheduler="slurm", path=Path("/c.yaml"), partitions=PARTS, **kw)  # type: ignore[arg-type]


def procs() -> list:
    return [Proc(0, "DONE", "N", ""), Proc(1, "DONE", "A", "TIMEOUT: killed after 00:40:00"),
            Proc(2, "DONE", "A", "OUT_OF_MEMORY: task Null exceeded the memory limit"),
            Proc(3, "DONE", "E", "exit code 1")]


def test_auto_doubles_what_processes_ran_into_and_picks_a_partition_that_takes_it() -> None:
    assert killed_by(procs()) == ([1], [2])
    tf, mf = auto_factors(dpu(), procs(), 2400, 3000, None, None)
    assert (tf, mf) == (2.0, 2.0)
    limits = grow(dpu(), 2400, 3000, tf, mf, "short", clamp=True)
    assert (limits.time_limit, limits.mem, limits.partition) == (4800, 6000, "long")
    assert limits.notes == ["partition long (takes 4800 s and 6000 MB)"]
    # Only a timeout: the memory stays, and a factor the user gave wins over --auto's.
    assert auto_factors(dpu(), procs()[:2], 2400, 3000, None, None) == (2.0, 1.0)
    assert auto_factors(dpu(), procs()[:2], 2400, 3000, 3.0, None) == (3.0, 1.0)


def test_auto_stops_at_the_largest_partition_and_says_when_nothing_more_fits() -> None:
    capped = grow(dpu(), 60000, 1000, 2.0, 1.0, "long", clamp=True)
    assert (capped.time_limit, capped.partition) == (86400, "long")
    assert capped.notes[0] == "time capped at 86400 s, the most DPU c's partitions allow"
    with pytest.raises(RerunRefused, match=r"--auto cannot give more: process\(es\) 1 ran into the "
                                           r"time limit of 86400 s, already the most DPU c's"):
        auto_factors(dpu(), procs(), 86400, 1000, None, None)
    # Without clamp (the user's own factors) a rerun no partition takes is refused, saying why.
    with pytest.raises(RerunRefused, match=r"with 172800 s and 1000 MB per process: no partition of "
                                           r"DPU 'c' takes 172800 s"):
        grow(dpu(), 86400, 1000, 2.0, 1.0, "long", clamp=False)


def test_a_dpu_without_partitions_keeps_no_partition() -> None:
    cfg = DPUConfig(name="l", scheduler="local", path=Path("/l.yaml"))
    limits = grow(cfg, 100, 200, 2.0, 1.5, None, clamp=True)
    assert (limits.time_limit, limits.mem, limits.partition, limits.notes) == (200, 300, None, [])


def test_drmaa_rerun_tasks_map_back_to_the_indices_they_ran(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "u", "Null", {}, {"chunk": 150, "layout": [[0, [2, 5]], [150, [151, 153]]]},
                       155, 1)
    job = store.job(jid)
    # The DRM module reports task k of chunk c at offset + k - 1: 0, 1 and 150, 151.
    seen = {jid: {0: "t1", 1: "t2", 150: "t3", 151: "t4", 152: "stray"}}
    assert remap([job], seen) == {jid: {2: "t1", 5: "t2", 151: "t3", 153: "t4"}}
    first = store.job(store.record("d", "u", "Null", {}, {"chunk": 150}, 3, 1))
    assert remap([first], {first.id: {0: "a", 2: "b"}}) == {first.id: {0: "a", 2: "b"}}
