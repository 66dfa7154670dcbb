"""Target processing (issue 13, must-have 2): Task(requires=...), dpu.run_target / dpu target plan
the required tasks as jobs joined by after edges and skip the processes an earlier job committed
with the same options and code; the checks of requires; on the local DPU, real graphs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, List

import pytest

from dpu_slurm.catalog import Catalog, Option, Task
from dpu_slurm.cli import main
from dpu_slurm.errors import CatalogError, DPUError, OptionError, SequenceError
from dpu_slurm.target import edges, inputs, matches, order, plan_steps
from tests.conftest import Session

WFI = {"i": "WFI", "d": "2000-04-28"}
CCDS = [f"ccd{n}" for n in range(50, 58)]

TASKS = '''
from dpu_slurm.catalog import Option, Task

NAME = Option("n", "name", str, "", "one name; all of names when empty")
NAMES = Option("ns", "names", str, "a,b,c", "the names")
COMMIT = Option("C", "commit", bool, False, "commit the results")
SLEEP = Option("s", "sleep", float, 0.0, "seconds Make sleeps")
OPTS = (NAME, NAMES, COMMIT, SLEEP)

def per_name(o):
    return [{}] if o["name"] else [{"name": n} for n in o["names"].split(",")]

def shifted(o):
    return [{"name": n + "!"} for n in o["names"].split(",")]

TASKS = [
    # Limits of a minute: on a loaded machine (load 24 seen) a 1 s limit ends a process A.
    Task("Make", run="tpipe.steps:make", options=OPTS, split=per_name, estimate=lambda o: 60 + o["sleep"]),
    Task("Use", run="tpipe.steps:use", options=OPTS, split=per_name, estimate=60, requires=("Make",)),
    Task("Sum", run="tpipe.steps:total", options=(NAMES, COMMIT), estimate=60, requires=("Use",)),
    Task("Odd", run="tpipe.steps:use", options=OPTS, split=shifted, estimate=60, requires=("Make",)),
]
'''

STEPS = '''
def make(ctx):
    import time
    time.sleep(ctx.options["sleep"])
    (ctx.workdir / "made.txt").write_text(ctx.options["name"].upper())
    return [{"made": ctx.options["name"]}]

def use(ctx):
    got = [(d / "made.txt").read_text() for d in ctx.inputs["Make"]]
    (ctx.workdir / "used.txt").write_text("+".join(got))
    return [{"used": got}]

def total(ctx):
    return [{"sum": sorted((d / "used.txt").read_text() for d in ctx.inputs["Use"])}]
'''


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small AWEPIPE tree with a three-level graph: Sum requires Use requires Make."""
    root = tmp_path / "tpipe_tree"
    (root / "tpipe").mkdir(parents=True)
    (root / "tpipe" / "__init__.py").write_text("")
    (root / "tpipe" / "steps.py").write_text(textwrap.dedent(STEPS))
    (root / "dpu_tasks.py").write_text(textwrap.dedent(TASKS))
    monkeypatch.setenv("AWEPIPE", str(root))
    return root


def ids(sess: Session) -> List[int]:
    return sess.dpu.get_jobids()


def said(sess: Session) -> List[str]:
    return [ln.split(" - ", 1)[1].strip() for ln in sess.printed() if " - " in ln]


def objects(sess: Session, jid: int) -> List[Any]:
    return sess.dpu.get_job_result(jid, echo=False)


# -- the declarations --------------------------------------------------------------------------
def test_requires_of_an_unknown_task_a_cycle_or_a_bare_string_are_refused_at_load() -> None:
    opt = (Option("x", "xx"),)
    with pytest.raises(CatalogError, match=r"'A' requires unknown task\(s\) Bais; declared tasks: A, Bias"):
        Catalog([Task("A", "m:f", opt, requires=("Bais",)), Task("Bias", "m:f", opt)], source="t.py")
    with pytest.raises(CatalogError, match="requires makes a cycle: A -> B -> C -> A"):
        Catalog([Task("A", "m:f", requires=("B",)), Task("B", "m:f", requires=("C",)),
                 Task("C", "m:f", requires=("A",))])
    with pytest.raises(CatalogError, match="cycle: A -> A"):
        Catalog([Task("A", "m:f", requires=("A",))])
    with pytest.raises(CatalogError, match=r"requires must be a tuple of task names, e\.g\. requires="):
        Catalog([Task("A", "m:f", requires="B"), Task("B", "m:f")])  # type: ignore[arg-type]
    assert issubclass(CatalogError, DPUError)


def test_order_puts_each_task_after_what_it_requires_and_a_shared_one_once() -> None:
    cat = Catalog([Task("A", "m:f", requires=("B", "C")), Task("B", "m:f", requires=("D",)),
                   Task("C", "m:f", requires=("D",)), Task("D", "m:f")])
    assert order(cat, "A") == ["D", "B", "C", "A"]
    assert order(cat, "D") == ["D"]
    with pytest.raises(OptionError, match="run_target takes one task name"):
        order(cat, "A>B")
    with pytest.raises(SequenceError, match="unknown sequence 'E'"):
        order(cat, "E")


def test_the_example_hotpixels_requires_bias() -> None:
    from dpu_slurm.config import packaged
    cat = Catalog.load(packaged("examples") / "awepipe")
    assert cat.tasks["HotPixels"].requires == ("Bias",)
    assert order(cat, "HotPixels") == ["Bias", "HotPixels"]


# -- bad requests submit nothing ---------------------------------------------------------------
def test_bad_target_requests_are_refused_before_anything_is_submitted(tree: Path, session: Session) -> None:
    with pytest.raises(SequenceError, match="did you mean 'Sum'"):
        session.dpu.run_target("Sun")
    with pytest.raises(OptionError, match=r"no task of this target \(Make, Use, Sum\) has option\(s\) bogus"):
        session.dpu.run_target("Sum", bogus=1)
    with pytest.raises(OptionError, match=r"Odd process 0 .* finds no process of Make with the same option"):
        session.dpu.run_target("Odd")
    assert ids(session) == []   # Make was planned first, but nothing was submitted


# -- real graphs on the local DPU --------------------------------------------------------------
def test_a_three_level_target_runs_in_order_and_a_second_run_skips_everything(
        tree: Path, session: Session) -> None:
    jobs = session.dpu.run_target("Sum", ns="a,b,c")
    assert list(jobs) == ["Make", "Use", "Sum"] and all(jobs.values())
    make, use, total = jobs["Make"], jobs["Use"], jobs["Sum"]
    store = session.dpu._store
    # Use process k reads only Make process k: paired ('each'); Sum reads all three: 'ok'
    assert store.job(use).dpu_options["after"] == {"jobs": [make], "mode": "each"}
    assert store.job(total).dpu_options["after"] == {"jobs": [use], "mode": "ok"}
    assert "inputs" not in store.job(use).dpu_options   # the folders go to job.json only
    views = session.dpu.wait([make, use, total], timeout=90, interval=0.05)
    assert [v.counts.line() for v in views] == ["3/0/0/0/0", "3/0/0/0/0", "1/0/0/0/0"], views
    assert objects(session, total) == [{"sum": ["A", "B", "C"]}]
    assert [o["used"] for o in objects(session, use)] == [["A"], ["B"], ["C"]]

    before = ids(session)
    again = session.dpu.run_target("Sum", ns="a,b,c")
    assert again == {"Make": None, "Use": None, "Sum": None}
    assert ids(session) == before
    assert f"Make: 3 of 3 process(es) committed earlier with these options and code (job {make}); " \
        "0 to run" in said(session)
    assert any(line.startswith("Nothing to run: every process of Sum") for line in said(session))
    forced = session.dpu.run_target("Sum", ns="a,b,c", force=True, dry_run=True)
    assert forced == {"Make": None, "Use": None, "Sum": None} and ids(session) == before
    assert "Make: 0 of 3 process(es) committed earlier with these options and code; 3 to run" in said(session)


def test_only_the_missing_processes_run_and_read_the_earlier_results(tree: Path, session: Session) -> None:
    earlier = session.dpu.run("Make", n="b", C=1, return_jobid=True)
    uncommitted = session.dpu.run("Make", n="c", return_jobid=True)
    session.dpu.wait([earlier, uncommitted], timeout=60, interval=0.05)
    jobs = session.dpu.run_target("Use")
    make, use = jobs["Make"], jobs["Use"]
    store = session.dpu._store
    assert store.job(make).nproc == 2   # a and c: b is committed, c's earlier run was not
    assert store.job(use).nproc == 3
    # Use process 1 reads the earlier job's b, so the pairing does not hold: 'ok'
    assert store.job(use).dpu_options["after"] == {"jobs": [make], "mode": "ok"}
    assert store.job(use).dpu_options["uses"] == [earlier]
    views = session.dpu.wait([make, use], timeout=60, interval=0.05)
    assert [v.counts.line() for v in views] == ["2/0/0/0/0", "3/0/0/0/0"], views
    assert [o["used"] for o in objects(session, use)] == [["A"], ["B"], ["C"]]
    session.dpu.get_status([make, use])
    lines = said(session)
    assert f"after job {make} (ok)" in lines
    assert f"reuses committed results of job {earlier}" in lines


def test_other_options_or_other_code_are_not_skipped(tree: Path, session: Session) -> None:
    done = session.dpu.run("Make", n="a", C=1, return_jobid=True)
    session.dpu.wait(done, timeout=60, interval=0.05)
    session.dpu.run_target("Make", dry_run=True)
    assert said(session)[-1] == (f"Make: 1 of 3 process(es) committed earlier with these options and code "
                                 f"(job {done}); 2 to run")
    session.dpu.run_target("Make", ns="a,x", dry_run=True)   # the same process a, other options
    assert said(session)[-1].startswith("Make: 0 of 2 process(es)")
    with (tree / "tpipe" / "steps.py").open("a") as fh:
        fh.write("# a change of the code\n")
    session.dpu.run_target("Make", dry_run=True)
    assert said(session)[-1].startswith("Make: 0 of 3 process(es)")
    assert ids(session) == [done]


def test_a_target_waits_for_an_earlier_job_still_making_what_it_needs(tree: Path, session: Session) -> None:
    earlier = session.dpu.run_target("Make", n="a", s=5)["Make"]
    jobs = session.dpu.run_target("Use", s=5)
    make, use = jobs["Make"], jobs["Use"]
    assert f"Make: 0 of 3 process(es) committed earlier with these options and code, 1 under way " \
        f"(job {earlier}); 2 to run" in said(session)
    store = session.dpu._store
    assert store.job(make).nproc == 2   # b and c: a is being made by the earlier job
    assert store.job(use).dpu_options["after"] == {"jobs": sorted([earlier, make]), "mode": "ok"}
    assert store.job(use).dpu_options["uses"] == []   # the earlier job is an edge: it is not done yet
    views = session.dpu.wait([earlier, make, use], timeout=90, interval=0.05)
    assert [v.counts.line() for v in views] == ["1/0/0/0/0", "2/0/0/0/0", "3/0/0/0/0"], views
    assert [o["used"] for o in objects(session, use)] == [["A"], ["B"], ["C"]]
    assert session.dpu.run_target("Use", s=5) == {"Make": None, "Use": None}


def test_edges_pair_processes_only_where_the_scheduler_can(tree: Path, session: Session) -> None:
    steps = {s.task: s for s in plan_steps(session.dpu._session, session.dpu.catalog, "Use", {"ns": "a,b"})}
    for step in steps.values():
        step.missing = [0, 1]
        step.position = {0: 0, 1: 1}
        matches(steps, step, session.dpu.catalog)
    steps["Make"].job_id, steps["Make"].jobdir = 41, "/w/jobs/41.x"
    assert edges(steps, steps["Use"], "slurm") == {"jobs": [41], "mode": "each"}
    assert edges(steps, steps["Use"], "pbs") == {"jobs": [41], "mode": "ok"}   # PBS has no aftercorr
    assert inputs(steps, steps["Use"]) == [{"Make": ["/w/jobs/41.x/p/0/work"]},
                                           {"Make": ["/w/jobs/41.x/p/1/work"]}]
    steps["Make"].done, steps["Make"].pending = {0: (40, ("/w/jobs/40.x", 3))}, {0}
    assert edges(steps, steps["Use"], "slurm") == {"jobs": [40, 41], "mode": "ok"}


def test_hotpixels_target_skips_committed_ccds_and_reads_their_master_bias(session: Session) -> None:
    first = [session.dpu.run("Bias", c=ccd, C=1, return_jobid=True, **WFI) for ccd in CCDS[:2]]
    session.dpu.wait(first, timeout=90, interval=0.05)
    jobs = session.dpu.run_target("HotPixels", **WFI)
    bias, hot = jobs["Bias"], jobs["HotPixels"]
    assert bias and hot
    store = session.dpu._store
    assert store.job(bias).nproc == 6 and store.job(hot).nproc == 8
    views = session.dpu.wait([bias, hot], timeout=120, interval=0.05)
    assert [v.counts.line() for v in views] == ["6/0/0/0/0", "8/0/0/0/0"], views
    logs = session.dpu.get_logs(hot, echo=False)
    folder = Path(store.job(first[1]).jobdir).name
    assert any(f"Using master bias MasterBias_WFI_ccd51_2000-04-28.json of {folder} process 0" in ln
               for ln in logs), logs
    assert [o["chip"] for o in objects(session, hot)] == CCDS
    assert session.dpu.run_target("HotPixels", **WFI) == {"Bias": None, "HotPixels": None}


def test_dpu_target_command_plans_and_submits(tree: Path, session: Session,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["target", "Use", "ns=a,b", "--dpu", "testlocal", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"Make": None, "Use": None}
    assert main(["target", "Use", "ns=a,b", "--dpu", "testlocal", "--wait", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "Sending job with identifier 2 to DPU (2 processes of Use) after job 1 (each)" in out
    assert "Jobid 2 has status FINISHED N/E/A/S/U 2/0/0/0/0" in out
    assert main(["target", "Nope", "--dpu", "testlocal"]) == 2
    assert "unknown sequence 'Nope'" in capsys.readouterr().err


def test_a_failed_prerequisite_ends_the_target_s(tree: Path, session: Session) -> None:
    steps = tree / "tpipe" / "steps.py"
    steps.write_text(steps.read_text().replace('def make(ctx):\n', 'def make(ctx):\n'
                                               '    assert ctx.options["name"] != "b", "no b"\n'))
    jobs = session.dpu.run_target("Sum", ns="a,b")
    views = session.dpu.wait(list(jobs.values()), timeout=90, interval=0.05)  # type: ignore[arg-type]
    assert [v.counts.line() for v in views] == ["1/1/0/0/0", "1/0/0/1/0", "0/0/0/1/0"], views
    procs = {p.idx: p for p in session.dpu._store.procs(jobs["Use"])}  # type: ignore[arg-type]
    assert procs[1].reason == f"prerequisite job {jobs['Make']} process 1 ended E"
    total = session.dpu._store.procs(jobs["Sum"])  # type: ignore[arg-type]
    assert [p.reason for p in total] == [f"prerequisite job {jobs['Use']} process 1 ended S"]
