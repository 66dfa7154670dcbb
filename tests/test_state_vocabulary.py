"""One state vocabulary: code under dpu_slurm/ names states through dpu_slurm.states, not literals.

The scan looks at string constants where a state is tested or set: the operands of a comparison
(and the items of a tuple/list/set compared against), a returned constant, a default argument,
and a constant (or tuple/set of constants) assigned. Dict keys (the schedulers' STATE_MAP native
strings), call arguments and SQL text are not looked at.
"""
import ast
import json
import sqlite3
from pathlib import Path
from typing import Iterator, List, Tuple

import dpu_slurm
from dpu_slurm.session import JobView
from dpu_slurm.states import (
    PHASE_TERMINAL,
    PROC_TERMINAL,
    STATUS_TERMINAL,
    JobStatus,
    ObsState,
    Phase,
    ProcState,
)
from dpu_slurm.store import Counts
from tests.test_contract import job

PACKAGE = Path(dpu_slurm.__file__).parent
VOCABULARY = {m.value for enum in (ObsState, ProcState, Phase, JobStatus) for m in enum}
SKIPPED = {"states.py", "worker.py", "prereq.py", "requeue.py"}  # the definitions; the worker
# and the modules it ships with (bundle.WORKER_FILES) travel alone: stdlib only, no states.py
# (file, function, literal) kept on purpose: other vocabularies that share a spelling.
ALLOWED = {
    # the local runner's own per-process states in its runner file (native, like STATE_MAP keys)
    ("schedulers/local.py", "_final", "DONE"),
    ("schedulers/local.py", "_settled", "RUNNING"),
    # a bulk manifest entry's state ("submitted", "skipped", "deferred", ...), not a job phase
    ("bulk.py", "run", "submitted"),
    ("bulk.py", "_preview", "submitted"),
    ("bulk.py", "_submit_one", "submitted"),
}


def _constants(node: ast.AST) -> Iterator[ast.Constant]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    for item in items:
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            yield item


def _looked_at(tree: ast.AST) -> Iterator[Tuple[str, ast.Constant]]:
    """(enclosing function, constant) for every constant where a state is tested or set."""
    def walk(node: ast.AST, func: str) -> Iterator[Tuple[str, ast.Constant]]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                yield from ((func, c) for c in _constants(default))
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                yield from ((func, c) for c in _constants(operand))
        elif isinstance(node, ast.Return) and node.value is not None:
            yield from ((func, c) for c in _constants(node.value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = node.value
            if not isinstance(value, ast.List):  # a list assigned is a table's headers, not a state
                yield from ((func, c) for c in _constants(value))
        for child in ast.iter_child_nodes(node):
            yield from walk(child, func)
    return walk(tree, "<module>")


def bare_literals(root: Path) -> List[str]:
    found: List[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in SKIPPED:
            continue
        for func, const in _looked_at(ast.parse(path.read_text(), str(path))):
            if const.value in VOCABULARY and (rel, func, const.value) not in ALLOWED:
                found.append(f"{rel}:{const.lineno} in {func}: {const.value!r}")
    return found


def test_no_bare_state_literals_in_the_package():
    found = bare_literals(PACKAGE)
    assert not found, "use the dpu_slurm.states members instead of:\n" + "\n".join(found)


def test_the_scan_catches_a_reintroduced_literal(tmp_path):
    (tmp_path / "mod.py").write_text(
        "def f(job, views):\n"
        "    if job.phase == 'recorded':\n"
        "        return 'SUBMITTING'\n"
        "    done = all(v.status in ('FINISHED', 'NOT SUBMITTED') for v in views)\n"
        "    state = 'DONE'\n"
        "    return done, state\n"
        "MAP = {'RUNNING': 1}\n")  # a dict key (native scheduler string) is not flagged
    assert bare_literals(tmp_path) == [
        "mod.py:2 in f: 'recorded'", "mod.py:3 in f: 'SUBMITTING'", "mod.py:4 in f: 'FINISHED'",
        "mod.py:4 in f: 'NOT SUBMITTED'", "mod.py:5 in f: 'DONE'"]


def test_members_serialize_bind_and_match_as_the_plain_strings():
    # The store hands back plain strings: the TERMINAL sets and == must still match them.
    assert "DONE" in PROC_TERMINAL and "not_submitted" in PHASE_TERMINAL
    assert "NOT SUBMITTED" in STATUS_TERMINAL and Phase.RECORDED == "recorded"
    view = JobView(job(), Counts(0, 0, 2, [2, 0, 0, 0, 0]))
    assert view.status is JobStatus.FINISHED
    assert json.dumps({"status": view.status}) == '{"status": "FINISHED"}'
    assert f"{JobStatus.NOT_SUBMITTED}|{view.status}" == "NOT SUBMITTED|FINISHED"
    # sqlite3 binds a str-Enum member as TEXT holding its value, in writes and in queries
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (phase TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (Phase.NOT_SUBMITTED,))
    assert db.execute("SELECT phase, typeof(phase) FROM t WHERE phase=?", (Phase.NOT_SUBMITTED,)
                      ).fetchall() == [("not_submitted", "text")]
