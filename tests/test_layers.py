"""The layering rules of dpu_slurm, checked on the source (issue 11, "no face below a face"):
the session and the rest of the core never import a face (web, command line), all SQL goes
through the store layer, no module reaches another's private names, and modules stay small."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

PACKAGE = Path(__file__).resolve().parent.parent / "dpu_slurm"
# The store layer: the only modules that talk SQL (sqlite_errors.py wraps the connection the
# store opens, so its own execute() methods are the store's).
STORE_LAYER = {"store.py", "store_extra.py", "store_attempts.py", "store_retries.py", "store_usage.py",
               "store_scale.py", "sqlite_errors.py"}
# The faces: what a user drives. The core below them imports none of them.
FACES = ("cli.py", "shell.py", "web/")
MAX_LINES = 400
# Over MAX_LINES with a reason; an entry that is no longer over fails, so the list only shrinks.
TOO_LONG: Dict[str, str] = {}   # module -> why it may stay over 400 lines (none now)
PUBLIC_UNDERSCORE = {"os._exit", "sys._getframe"}   # the standard library's own public names


def rel(path: Path, root: Path = PACKAGE) -> str:
    return path.relative_to(root).as_posix()


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imported(path: Path, root: Path = PACKAGE) -> Iterator[Tuple[int, str]]:
    """(line, dotted module) of every import, relative ones resolved inside dpu_slurm."""
    package = ["dpu_slurm", *rel(path, root).split("/")[:-1]]
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, module
            for alias in node.names:  # `from . import web` imports a module too
                yield node.lineno, f"{module}.{alias.name}"


def is_face(module: str) -> bool:
    return module in ("dpu_slurm.cli", "dpu_slurm.web") or module.startswith("dpu_slurm.web.")


def web_imports_of_session(root: Path) -> List[str]:
    return [f"line {n}: {m}" for n, m in imported(root / "session.py", root) if "web" in m.split(".")]


def face_imports(root: Path) -> List[str]:
    """Imports of a face by a core module (only cli.py and web/ may import a face)."""
    return [f"{rel(p, root)}:{n} imports {m}" for p in sorted(root.rglob("*.py"))
            if not rel(p, root).startswith(FACES) for n, m in imported(p, root) if is_face(m)]


def sql_calls(root: Path) -> List[str]:
    calls: List[str] = []
    for path in sorted(root.rglob("*.py")):
        if rel(path, root) in STORE_LAYER:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("execute", "executemany", "executescript"):
                calls.append(f"{rel(path, root)}:{node.lineno} {ast.unparse(node.func)}(...)")
    return calls


def private_reaches(root: Path) -> List[str]:
    """`x._name` where x is not self/cls, and `from m import _name`."""
    found: List[str] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                text = ast.unparse(node)
                if text not in PUBLIC_UNDERSCORE:
                    found.append(f"{rel(path, root)}:{node.lineno} {text}")
            elif isinstance(node, ast.ImportFrom):
                found += [f"{rel(path, root)}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def long_modules(root: Path) -> Dict[str, int]:
    counts = {rel(p, root): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    return {name: n for name, n in counts.items() if n > MAX_LINES}


def test_the_session_imports_nothing_of_the_web_layer() -> None:
    assert web_imports_of_session(PACKAGE) == []


def test_the_core_imports_no_face() -> None:
    assert face_imports(PACKAGE) == []


def test_only_the_store_layer_runs_sql() -> None:
    assert sql_calls(PACKAGE) == [], "SQL belongs behind a named method of store.py / store_extra.py"


def test_no_module_reaches_private_names_of_another() -> None:
    assert private_reaches(PACKAGE) == []


def test_no_module_is_over_400_lines() -> None:
    """Every module is at most 400 lines, but those allowed (with a reason) in TOO_LONG; an
    allowed one that has become short must leave the list."""
    long = long_modules(PACKAGE)
    over = {k: v for k, v in long.items() if k not in TOO_LONG}
    assert over == {}, "split these by concern (as store.py / store_extra.py are split)"
    short = sorted(set(TOO_LONG) - set(long))
    assert short == [], f"{short} are short now: drop them from TOO_LONG"


def test_each_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """On a small tree that breaks every rule, every check reports it (so [] means something)."""
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "cards.py").write_text("store.db.execute('SELECT 1')\n")  # a face: may import
    (tmp_path / "session.py").write_text("from .web.cards import write_card\nfrom . import web\n")
    (tmp_path / "bulk.py").write_text("def f(store, dpu):\n    store.db.executemany('DELETE', [])\n"
                                      "    return dpu._session\n")
    (tmp_path / "store.py").write_text("db.execute('SELECT 1')\n" + "x = 1\n" * MAX_LINES)
    assert web_imports_of_session(tmp_path) == [
        "line 1: dpu_slurm.web.cards", "line 1: dpu_slurm.web.cards.write_card", "line 2: dpu_slurm.web"]
    assert face_imports(tmp_path) == ["session.py:1 imports dpu_slurm.web.cards",
                                      "session.py:1 imports dpu_slurm.web.cards.write_card",
                                      "session.py:2 imports dpu_slurm.web"]
    assert sql_calls(tmp_path) == ["bulk.py:2 store.db.executemany(...)",
                                   "web/cards.py:1 store.db.execute(...)"]
    assert private_reaches(tmp_path) == ["bulk.py:3 dpu._session"]
    assert long_modules(tmp_path) == {"store.py": MAX_LINES + 1}
