"""A plain (non-editable) install carries the templates, configs and example pipeline, and works."""
from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Set

import pytest

from tests.conftest import REPO, Env

SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                              ".mypy_cache", ".ruff_cache", ".pytest_cache", "demo-output", "*.log")


@pytest.mark.slow
def test_wheel_holds_the_data_and_installs_into_a_fresh_venv(tmp_path: Path, env: Env) -> None:
    pip_env = {**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}  # keep ~/.cache out
    src = tmp_path / "src"  # build from a copy: the build must not write into the checkout
    shutil.copytree(REPO, src, ignore=SKIP)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    str(src), "-w", str(wheels)], env=pip_env, check=True, timeout=300)
    [wheel] = list(wheels.glob("dpu_slurm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("dpu_slurm/templates/local.sh.j2", "dpu_slurm/templates/include/body.sh.j2",
                   "dpu_slurm/cluster_configs/local.yaml", "dpu_slurm/examples/awepipe/dpu_tasks.py",
                   "dpu_slurm/examples/awepipe/awepipe/calib.py", "dpu_slurm/worker.py"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dpu = dpu_slurm.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], env=pip_env, check=True, timeout=600)

    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # the plain install brought what SSH and DRMAA DPUs need (drmaa's import wants libdrmaa: ask pip's record)
    deps = subprocess.run([str(venv / "bin" / "python"), "-c", "import paramiko, importlib.metadata as m; "
                           "print(m.version('drmaa'))"], env=environ, capture_output=True, text=True)
    assert deps.returncode == 0, deps.stderr
    dpu = str(venv / "bin" / "dpu")
    seqs = subprocess.run([dpu, "sequences", "--json"], cwd=env.cwd, env=environ, capture_output=True,
                          text=True, timeout=120)
    assert seqs.returncode == 0, seqs.stderr
    assert {"Null", "ReadNoise", "Bias>HotPixels"} <= set(json.loads(seqs.stdout))
    # the installed package, not this checkout, ran
    code = "import dpu_slurm; print(dpu_slurm.__file__)"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", code],
                           cwd=env.cwd, env=environ, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv))
    # and a job runs on the packaged local DPU from the installed files
    run = subprocess.run([dpu, "run", "--dpu", "local", "--wait", "--json", "Null", "m=installed", "C=1"],
                         cwd=env.cwd, env=environ, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    [view] = json.loads(run.stdout)
    assert view["counters"]["N"] == 1


def plain(requirements: List[str]) -> Set[str]:
    """Names of the requirements a plain install brings (no extra marker)."""
    return {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in requirements if "extra ==" not in r}


def test_ssh_and_drmaa_need_no_extra() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    declared = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert {"paramiko", "drmaa", "jinja2", "pyyaml"} <= plain(declared)
    # the installed metadata says the same (make reinstalls when setup.cfg changes)
    assert {"paramiko", "drmaa"} <= plain(importlib.metadata.requires("dpu_slurm") or [])
    # old install lines keep working: the extras still exist, empty
    extras = cfg["options.extras_require"]
    assert extras["ssh"].strip() == extras["drmaa"].strip() == ""
    assert "[ssh" not in (REPO / "Makefile").read_text()


def test_one_version_source_and_the_command_prints_it() -> None:
    import dpu_slurm

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["version"].strip() == "attr: dpu_slurm.__version__"
    # the installed metadata agrees (make reinstalls when setup.cfg changes)
    assert importlib.metadata.version("dpu_slurm") == dpu_slurm.__version__
    out = subprocess.run([str(Path(sys.executable).parent / "dpu"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["dpu_slurm", dpu_slurm.__version__]


def test_the_license_file_matches_the_declared_license() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["license"].strip() == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the dpu_slurm authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    assert "LICENSE" in cfg["metadata"]["license_files"]


def test_lint_tools_are_pinned_and_playwright_is_its_own_extra() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = cfg["options.extras_require"]
    dev = [r.strip() for r in extras["dev"].splitlines() if r.strip()]
    assert {r.split("==")[0] for r in dev} >= {"ruff", "mypy", "types-PyYAML"}
    assert all("==" in r for r in dev), dev
    assert "playwright" not in extras["test"] and "playwright" in extras["browser"]
    assert "pytest-mock" not in extras["test"]
    # every pinned tool is the one installed (the Makefile installs the dev extra)
    for req in dev:
        name, version = req.split("==")
        assert importlib.metadata.version(name) == version, name
    makefile = (REPO / "Makefile").read_text()
    assert "browser" in makefile and "docs" in makefile
    assert re.search(r"^test: .*\bdocs\b", makefile, re.M)
