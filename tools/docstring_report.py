"""List the public classes, functions and methods of dpu_slurm/ that have no docstring.

``python tools/docstring_report.py [MODULE_PATH ...]``: one line per missing docstring
(``path:line name``), then a count per module; exit status 1 when any is missing. Public means
not starting with ``_`` (methods of private classes and nested functions are not counted).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dpu_slurm"

Missing = Tuple[int, str]


def public(name: str) -> bool:
    """True for names a reader of the API reference sees."""
    return not name.startswith("_")


def missing(tree: ast.Module) -> Iterator[Missing]:
    """(line, dotted name) of each public definition of one module without a docstring."""
    if ast.get_docstring(tree) is None:
        yield 1, "<module>"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and public(node.name):
            if ast.get_docstring(node) is None:
                yield node.lineno, node.name
        elif isinstance(node, ast.ClassDef) and public(node.name):
            if ast.get_docstring(node) is None:
                yield node.lineno, node.name
            for item in node.body:
                if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and public(item.name)
                        and ast.get_docstring(item) is None):
                    yield item.lineno, f"{node.name}.{item.name}"


def report(paths: List[Path]) -> int:
    """Print the missing docstrings of ``paths``; return how many there are."""
    total = 0
    counts = []
    for path in paths:
        found = list(missing(ast.parse(path.read_text(), filename=str(path))))
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for line, name in found:
            print(f"{rel}:{line} {name}")
        if found:
            counts.append((str(rel), len(found)))
        total += len(found)
    if counts:
        print()
        for rel, count in counts:
            print(f"{count:4d}  {rel}")
    print(f"{total} public name(s) without a docstring")
    return total


def main(argv: List[str]) -> int:
    """Command-line entry: the given files, or every module of the package."""
    paths = [Path(a).resolve() for a in argv] or sorted(PACKAGE.rglob("*.py"))
    return 1 if report(paths) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
