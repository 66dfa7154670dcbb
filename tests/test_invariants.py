"""The invariants docs/ARCHITECTURE.md names: the worker is stdlib-only, the remote helper keeps its
Python floor, and the bundle's tree hash equals the remote helper's hash of the unpacked tree."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Set

from dpu_slurm import bundle
from dpu_slurm.transport import remote_helper
from tests.conftest import REPO

PACKAGE = REPO / "dpu_slurm"


def imported_modules(path: Path) -> Set[str]:
    """The top-level names of every absolute import in a file (relative ones are the package's)."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_shipped_worker_files_import_only_the_standard_library() -> None:
    for name in bundle.WORKER_FILES:
        outside = imported_modules(PACKAGE / name) - set(sys.stdlib_module_names) - {"__future__"}
        assert not outside, f"{name} imports {sorted(outside)}: the worker must stay stdlib-only"


def test_the_worker_imports_with_only_the_standard_library_on_the_path(tmp_path: Path) -> None:
    # What a node sees: the bundle's worker/ folder and a bare Python (-S: no site-packages).
    built = bundle.build(None, tmp_path / "cache")
    worker_dir = bundle.unpack(built, tmp_path / "bundles") / "worker"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import dpu_slurm.worker as w; "
            "import dpu_slurm; print(w.__file__); "
            "print(sorted(n for n, m in sys.modules.items() "
            "if 'site-packages' in str(getattr(m, '__file__', ''))))")
    proc = subprocess.run([sys.executable, "-S", "-E", "-c", code, str(worker_dir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    where, third_party = proc.stdout.splitlines()
    assert where.startswith(str(worker_dir))
    assert third_party == "[]"


def test_the_remote_helper_parses_as_python_3_6() -> None:
    # The helper runs with whatever python3 a login node has; 3.6 is its documented floor.
    ast.parse(remote_helper.SOURCE, feature_version=(3, 6))
    assert "3.6+" in (remote_helper.__doc__ or "")
    imports = imported_modules_of_source(remote_helper.SOURCE)
    assert imports <= set(sys.stdlib_module_names), imports - set(sys.stdlib_module_names)


def imported_modules_of_source(source: str) -> Set[str]:
    names: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def helper_check(final: Path, digest: str) -> str:
    request = json.dumps({"check_bundle": [str(final), digest]})
    proc = subprocess.run([sys.executable, "-S", "-c", remote_helper.SOURCE], input=request,
                          capture_output=True, text=True, timeout=60, check=True)
    return str(json.loads(proc.stdout)["bundle"])


def test_the_bundle_hash_and_the_remote_helper_hash_agree(tmp_path: Path) -> None:
    src = tmp_path / "awepipe"
    files = {"dpu_tasks.py": "TASKS = []\n", "pipe/__init__.py": "", "pipe/deep/er/task.py": "X = 1\n",
             "bin/run.sh": "#!/bin/sh\necho hi\n", "data/empty.txt": ""}
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    os.chmod(src / "bin" / "run.sh", 0o755)
    (src / "pipe" / "__pycache__").mkdir()
    (src / "pipe" / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\0compiled")
    built = bundle.build(src, tmp_path / "cache")
    final = bundle.unpack(built, tmp_path / "bundles")
    assert os.access(final / "code" / "bin" / "run.sh", os.X_OK)
    assert not (final / "code" / "pipe" / "__pycache__").exists()
    assert helper_check(final, built.digest) == "ok"

    # jobs compile into the unpacked bundle: the helper ignores what they leave
    (final / "code" / "pipe" / "deep" / "__pycache__").mkdir()
    (final / "code" / "pipe" / "deep" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert helper_check(final, built.digest) == "ok"

    # and both hashes see the executable bit: flipping it changes the tree for each of them
    os.chmod(final / "code" / "bin" / "run.sh", 0o644)
    assert helper_check(final, built.digest) == "altered"
    os.chmod(src / "bin" / "run.sh", 0o644)
    assert bundle.build(src, tmp_path / "cache2").digest != built.digest
    assert helper_check(final, bundle.build(src, tmp_path / "cache3").digest) == "ok"


def test_every_module_keeps_a_docstring_on_every_public_name() -> None:
    """Every module of the package, found by walking it: a new module is covered at once (the
    API reference shows these docstrings; tools/docstring_report.py lists what is missing)."""
    spec = importlib.util.spec_from_file_location("docstring_report", REPO / "tools" / "docstring_report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    modules = {str(m.relative_to(PACKAGE)): m for m in sorted(PACKAGE.rglob("*.py"))}
    assert {"schedulers/local.py", "states.py", "web/app.py"} <= set(modules)
    missing = {name: list(report.missing(ast.parse(m.read_text()))) for name, m in modules.items()}
    assert not {k: v for k, v in missing.items() if v}
    # the report itself finds a missing one
    assert list(report.missing(ast.parse('"""m."""\ndef f():\n    pass\n'))) == [(2, "f")]
