"""A run request -> its processes and the resources each one asks for."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .catalog import Catalog
from .config import DPUConfig
from .errors import OptionError
from .processes import Processes
from .run_request import check_dpu_options
from .schema import MAX_PROCESSES, MAX_TIME, At


@dataclass
class Plan:
    """What one ``dpu.run`` call will submit."""

    sequence: str
    tasks: List[Dict[str, str]]
    options: Dict[str, Any]
    processes: Processes
    estimate: float            # expected seconds per process
    time_limit: int            # seconds per process, enforced by the scheduler
    mem: int                   # MB per process
    partition: Optional[str]
    aweversion: str
    send_code: bool
    dpu_options: Dict[str, Any] = field(default_factory=dict)

    @property
    def nproc(self) -> int:
        """How many processes the job has."""
        return len(self.processes)

    def overrides(self) -> Dict[str, Any]:
        """Per-process options as job.json carries them: runs of indices, without what every
        process shares (processes.py, format 2): as small for 100,000 processes as for one."""
        return self.processes.job_file()


def make_plan(catalog: Catalog, dpu: DPUConfig, sequence: str, given: Mapping[str, Any],
              dpu_time: Optional[float] = None, dpu_mem: Optional[float] = None,
              dpu_aweversion: Optional[str] = None, send_code: bool = True) -> Plan:
    """Check a run request and turn it into a Plan (options, processes, time, memory, partition)."""
    # One check for the prompt, the command line, manifests and the API (dpu_slurm/run_request.py).
    asked = check_dpu_options({"dpu_time": dpu_time, "dpu_mem": dpu_mem,
                               "dpu_aweversion": dpu_aweversion, "send_code": send_code}, At())
    seq = catalog.sequence(sequence)
    values = catalog.parse(seq.identifier, given)
    processes = catalog.split(seq.identifier, values)
    if not processes:
        raise OptionError(f"{seq.identifier}: these options select no process to run")
    if len(processes) > MAX_PROCESSES:
        raise OptionError(f"{seq.identifier}: these options make {len(processes)} processes; one job "
                          f"has at most {MAX_PROCESSES}: split it into several runs")
    estimate = float(asked["dpu_time"]) if "dpu_time" in asked else \
        catalog.estimate(seq.identifier, values)
    limit_f = max(1.0, dpu.min_time, estimate * dpu.time_factor)
    if not math.isfinite(limit_f) or limit_f > MAX_TIME:
        source = "dpu_time" if "dpu_time" in asked else "the tasks' estimate for these options"
        raise OptionError(f"{seq.identifier}: {source} is {estimate:.3g} s per process; with "
                          f"time_factor {dpu.time_factor} that is more than {MAX_TIME} s (365 days), "
                          "the most a process may ask for; give a smaller dpu_time (shell: --time) "
                          "or smaller option values")
    mem = math.ceil(asked["dpu_mem"]) if "dpu_mem" in asked else int(dpu.defaults.get("mem", 2000))
    limit = math.ceil(limit_f)
    version = _aweversion(dpu, asked.get("dpu_aweversion"))
    return Plan(
        sequence=seq.identifier,
        tasks=[{"name": t.name, "run": t.run} for t in seq.tasks],
        options=values,
        processes=processes,
        estimate=estimate,
        time_limit=limit,
        mem=mem,
        partition=pick_partition(dpu, limit, mem),
        aweversion=version,
        send_code=bool(send_code),
        dpu_options={"dpu_time": dpu_time, "dpu_mem": dpu_mem, "dpu_aweversion": dpu_aweversion,
                     "send_code": bool(send_code)},
    )


def _aweversion(dpu: DPUConfig, asked: Optional[str]) -> str:
    versions = dpu.awe_versions
    if asked is None:
        return dpu.default_aweversion or (next(iter(versions)) if versions else "")
    if asked not in versions:
        known = ", ".join(versions) or "none configured"
        raise OptionError(f"dpu_aweversion {asked!r} is not installed on DPU {dpu.name!r}; "
                          f"versions there: {known}")
    return asked


def pick_partition(dpu: DPUConfig, seconds: int, mem: int) -> Optional[str]:
    """The first configured partition whose limits fit; None when the DPU lists none."""
    if not dpu.partitions:
        return None
    for part in dpu.partitions:
        if seconds <= part.get("max_time", math.inf) and mem <= part.get("max_mem", math.inf):
            return str(part["name"])
    listed = "; ".join(f"{p['name']} (time <= {p.get('max_time', 'any')} s, mem <= "
                       f"{p.get('max_mem', 'any')} MB)" for p in dpu.partitions)
    raise OptionError(f"no partition of DPU {dpu.name!r} takes {seconds} s and {mem} MB per process; "
                      f"partitions: {listed}. The time is dpu_time (or the tasks' estimate) x time_factor "
                      f"{dpu.time_factor}; lower dpu_time/dpu_mem (shell: --time/--mem) or split the job")
