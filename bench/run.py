"""`make bench`: every benchmark, figures printed (never asserted).

Each script's lines are shown as they come, then written into README.md between the markers
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` (the Benchmarks section), with the machine
and the commit they were measured on: the README's figures are always a run's own output.
"""
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import List

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SCRIPTS = ("slurm_bench.py", "scale_bench.py", "ssh_bench.py", "drmaa_bench.py", "bulk_bench.py",
           "web_bench.py", "rerun_bench.py")


def commit() -> str:
    """The checkout's short commit, marked when the tree has changes."""
    try:
        head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def run(script: str) -> "tuple[int, List[str]]":
    """Run one benchmark, echoing its output; its exit status and its non-empty lines."""
    proc = subprocess.Popen([sys.executable, str(HERE / script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: List[str] = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.strip():
            lines.append(line.rstrip())
    return proc.wait(), lines


def main() -> int:
    """Run every benchmark; put the figures in README.md; non-zero when one failed."""
    status = 0
    figures: List[str] = []
    load = os.getloadavg()[0]   # the machine may be shared: say how busy it was
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        code, lines = run(script)
        status |= code
        figures += lines + ([f"{script}: FAILED (exit {code})"] if code else [])
    about = (f"`make bench` on {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
             f"Python {platform.python_version()}, commit {commit()}, load average {load:.1f} "
             "at the start:")
    block = "\n".join([BEGIN, about, "", "```", *figures, "```", END])
    text = README.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")
        print(f"\nthe figures are in {README} (Benchmarks)")
    return status


if __name__ == "__main__":
    sys.exit(main())
