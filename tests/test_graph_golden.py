"""Golden submit commands of a dependent job for every example config: the dependency options
each scheduler gets (SLURM --dependency, Grid Engine -hold_jid(_ad), PBS Pro / Torque -W depend=).
Regenerate with DPU_UPDATE_GOLDEN=1 after reviewing the diff."""
import os
import shlex
from dataclasses import replace
from pathlib import Path

from dpu_slurm.config import DPUConfig, load_file, packaged
from dpu_slurm.schedulers import for_dpu
from dpu_slurm.transport.local import LocalTransport
from tests.test_golden import request

GOLDEN = Path(__file__).parent / "golden" / "after-argv.txt"


def prereqs(cfg, pbs_array):
    """Two prerequisite jobs of 2500 processes in the DPU's chunks, native ids as it prints them."""
    out = []
    for job, base in ((40, 9000), (41, 9100)):
        count = -(-2500 // cfg.max_array_size)
        natives = [str(base + k) for k in range(count)]
        if cfg.scheduler == "pbs":
            natives = [f"{n}[].pbs01" if pbs_array else f"{n}.pbs01" for n in natives]
        out.append({"job": job, "natives": natives, "pending": True, "nproc": 2500,
                    "chunk": cfg.max_array_size, "jobdir": f"/scratch/alice/dpu/jobs/{job}.abcd1234"})
    return out


def commands():
    """One line per chunk: CONFIG MODE | the submit command."""
    got = []
    configs = [(p.stem, load_file(p)) for p in sorted(packaged("cluster_configs").glob("*.yaml"))]
    # No example config uses Grid Engine's qsub (example-sge-drmaa submits through DRMAA).
    configs.append(("sge-cli", DPUConfig(name="sge", scheduler="sge", path=Path("sge.yaml"))))
    for stem, cfg in configs:
        if cfg.submit != "cli" or cfg.scheduler == "local":
            continue
        sched = for_dpu(cfg, LocalTransport())
        modes = ("ok", "any") if cfg.scheduler == "pbs" else ("ok", "any", "each")
        for mode in modes:
            req = replace(request(cfg), after={"mode": mode, "prereqs": prereqs(cfg, mode == "ok")})
            scripts = sched.scripts(req)
            got += [f"{stem} {mode} | {shlex.join(sched.submit_argv(req, name, text))}"
                    for name, text in scripts.items()]
    return "\n".join(got) + "\n"


def test_dependent_submit_commands_match_the_golden_file():
    got = commands()
    if os.environ.get("DPU_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), f"{GOLDEN} differs; review, then DPU_UPDATE_GOLDEN=1"


def test_the_golden_file_holds_each_dialect():
    text = GOLDEN.read_text()
    for words in ("--dependency=afterok:9000:9001:9002", "--dependency=aftercorr:9001:9101",
                  "--kill-on-invalid-dep=yes", "-hold_jid_ad", "depend=afterok:9000[].pbs01",
                  "depend=afterokarray:9000[].pbs01", "depend=afterany:9000.pbs01"):
        assert words in text, words
