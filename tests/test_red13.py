"""Red team of issue 13 (targets, after edges on the page, the shell's paste hint, the
all-DPU page and dpu="auto") as a hostile second Unix user and as an unlucky crash.

Each test names the attack it makes; the report of the red13 branch lists the outcomes.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest

from dpu_slurm import Processor, cli
from dpu_slurm.catalog import Catalog
from dpu_slurm.config import discover, get_dpu, packaged
from dpu_slurm.errors import ConfigError, SequenceError
from dpu_slurm.index import CARD_VERSION, BadCard, Card
from dpu_slurm.plan import make_plan
from dpu_slurm.session import DPUSession, open_store
from dpu_slurm.shell import Console, run_hint
from dpu_slurm.store import LETTERS
from dpu_slurm.target import order
from dpu_slurm.web.pages import html
from dpu_slurm.web.rows import Row
from tests.conftest import Env, Session
from tests.test_crash import AFTER, BEFORE, GRACE, all_jobs, bulk_run, killed
from tests.test_routing import NIGHT as ROUTING_NIGHT
from tests.test_target import WFI, tree  # noqa: F401 - the fixture


# -- 3. dpu shell's paste hint: nothing of the line runs, odd lines get a hint or nothing ---------
def _typed(line: str) -> List[str]:
    """What the prompt writes for one typed line (the console, not a pty: the same code path)."""
    out = io.StringIO()
    console = Console({})
    console.write = out.write   # type: ignore[method-assign,assignment]
    console.push(line)          # would raise if the hint code (or the compiler) escaped
    console.resetbuffer()
    return out.getvalue().splitlines()


ODD_LINES = {
    "hex literal too long to print": "'a', 0x" + "f" * 5000 + ")",
    "nested too deep for the parser": "'a', " + "-" * 5000 + "1)",
    "not chain too deep for the parser": "'a', " + "not " * 3000 + "1)",
    "nested deeper than the compiler takes": "'a', " + "-" * 100000 + "1)",
    "lone surrogate": "'a\udcff', i=1)",
    "lone surrogate after the prompt": "awe> '\udcff'",
    "NUL": "'a\x00', i=1)",
    "unbalanced quote": "'DomeFlat, i='WFI')",
    "huge line": "'a', i='" + "x" * 1_000_000 + "')",
}


@pytest.mark.parametrize("name", sorted(ODD_LINES))
def test_an_odd_pasted_line_gets_a_syntax_error_and_never_a_traceback_from_the_hint(name: str) -> None:
    """Broke (fixed): a hex literal of 5000 digits made ast.unparse raise ValueError, a deep
    nesting RecursionError, a lone surrogate UnicodeEncodeError, each out of the hint code and
    out of the prompt's loop (the shell ended); 100000 unary minuses made the compiler itself
    raise MemoryError, which code.InteractiveConsole does not catch."""
    lines = _typed(ODD_LINES[name])
    assert (lines and "Error" in lines[-1]) or any("Error" in ln for ln in lines), lines
    assert not any(ln.startswith("Traceback") for ln in lines), lines
    assert run_hint(ODD_LINES[name]) is None


def test_a_harmful_pasted_line_is_only_shown_never_run(tmp_path: Path) -> None:
    """Held: the hint parses the line (ast), it never evaluates it."""
    mark = tmp_path / "pwned"
    harm = f"__import__('os').system('touch {mark}')"
    for line in (f"'x', {harm})", f"'a', f'{{{harm}}}')", f"'a', (lambda: {harm})())",
                 f"awe> {harm}", f"awe> x = {harm}", f"{harm}, 'x')"):
        shown = _typed(line)
        assert not any(ln.startswith("Traceback (most recent call last)") and "hint" in ln for ln in shown)
        assert not mark.exists(), line
    hint = run_hint(f"'x', {harm})")
    assert hint is not None and hint.startswith("did you mean dpu.run('x', __import__")


def test_control_characters_of_a_pasted_line_are_shown_as_escapes() -> None:
    """Broke (fixed): a line typed with the awe> prompt was echoed verbatim in its hint, so an
    escape sequence pasted inside it (a terminal title, a screen clear) was obeyed."""
    line = "awe> print('\x1b]0;owned\x07\x1b[2J')"
    hint = run_hint(line)
    assert hint is not None and "\x1b" not in hint and "\x07" not in hint and "\\x1b" in hint
    shown = "\n".join(_typed(line))
    assert "did you mean" in shown and "\x1b]0;owned" not in shown
    run = run_hint("'a\x1b[2J', i=1)")
    assert run is not None and "\x1b" not in run


def test_the_hint_still_helps_with_a_how_to_line() -> None:
    assert run_hint("'DomeFlat', i='WFI', d='2000-04-28')  # comment") == (
        "did you mean dpu.run('DomeFlat', i='WFI', d='2000-04-28')? (the HOW-TO's run lines lost "
        "their 'dpu.run(')")
    assert run_hint("awe> dpu.get_jobids()") == \
        "did you mean dpu.get_jobids()? (type the line without the awe> prompt)"


# -- 4. dpu="auto" and the DPU search path: a folder mallory can write in ----------------------
MALLORY_UID = 1003


def _shared_configs(env: Env, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sticky world-writable folder (like /tmp or a group's scratch) on alice's search path,
    before her own configs, as DPU_CONFIG_PATH=/shared/dpu:~/.config/dpu would be."""
    shared = env.root / "shared-configs"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("DPU_CONFIG_PATH", f"{shared}{os.pathsep}{env.config}")
    return shared


def _malloryfile(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    os.chown(path, MALLORY_UID, MALLORY_UID)   # as if dpumallory wrote it
    return path


def test_a_dpu_file_another_user_wrote_is_not_used_and_auto_never_picks_it(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Broke (fixed): a DPU file mallory dropped in a folder on alice's search path was a DPU like
    any other: dpu='auto' sent alice's run there (ties go to the first name: 'aaa'), and one
    named like alice's DPU shadowed hers (the first match of a name wins)."""
    env.write_dpu("testlocal")
    shared = _shared_configs(env, monkeypatch)
    _malloryfile(shared, "aaa", f"name: aaa\nscheduler: local\nslots: 64\nworkdir: {shared}/m\n")
    _malloryfile(shared, "testlocal", f"name: testlocal\nscheduler: local\nworkdir: {shared}/m\n")
    dpus, problems = discover()
    assert "aaa" not in dpus
    assert dpus["testlocal"].workdir == str(env.work / "testlocal")   # alice's, not mallory's
    assert len(problems) == 2 and all("owned by dpumallory" in p for p in problems), problems
    with pytest.raises(ConfigError, match="owned by dpumallory, not by you or root"):
        get_dpu("aaa")
    from dpu_slurm.routing import choose
    choice = choose(dpus, lambda cfg: make_plan(Catalog.load(packaged("examples") / "awepipe"), cfg,
                                                "Bias", {"i": "WFI", "d": "2000-04-28", "c": "ccd50"}),
                    lambda name: DPUSession(dpus[name], open_store()))
    assert choice.dpu.name != "aaa"


def test_a_world_writable_dpu_file_is_not_used(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    path = env.write_dpu("open")
    os.chmod(path, 0o666)
    dpus, problems = discover()
    assert "open" not in dpus and len(problems) == 1 and "writable by every user" in problems[0]
    os.chmod(path, 0o644)
    assert "open" in discover()[0]


@pytest.mark.parametrize("call", ["discover()", "get_dpu('nope')", "get_dpu('zz')"])
def test_a_fifo_on_the_search_path_does_not_hang_every_dpu_command(
        env: Env, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Broke (fixed): open() of a FIFO named zz.yaml waits for a writer for ever: every dpu
    command, dpu web and dpu='auto' of whoever has the folder on the path hung."""
    env.write_dpu("testlocal")
    shared = _shared_configs(env, monkeypatch)
    os.mkfifo(shared / "zz.yaml")
    os.chown(shared / "zz.yaml", MALLORY_UID, MALLORY_UID)
    code = (f"from dpu_slurm.config import discover, get_dpu\nfrom dpu_slurm.errors import ConfigError\n"
            f"try:\n    print({call})\nexcept ConfigError as exc:\n    print('ConfigError', exc)\n")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{call} hung on a FIFO on the search path")
    assert res.returncode == 0, res.stderr
    assert "not a regular file" in res.stdout + res.stderr, res.stdout


# -- 1. a target run killed at each step of each of its submits, then run again ---------------
SLACK = 300   # seconds every test job may take: a loaded machine must not make them end A
KILL_AT = ["record", "shipped", "accepted", "chunk", "stored"]
KILLED_RUN = '''
import os, sys
from dpu_slurm import Processor
from dpu_slurm.session import DPUSession
step, nth = sys.argv[1], int(sys.argv[2])
calls = [0]
plain = DPUSession.submit
def submit(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:   # DPU_FAULT fires at the first step of that name: arm it for this submit
        os.environ["DPU_FAULT"] = step
    return plain(self, *args, **kwargs)
DPUSession.submit = submit
Processor("testlocal", session_log=False).run_target("Use", ns="a,b", s=0.5)
'''


def _ran(sess: Session, sequence: str) -> int:
    """Processes of `sequence` that ran to N, over every job of the store."""
    store = sess.dpu._store
    return sum(p.outcome == "N" for j in store.jobs() if j.sequence == sequence for p in store.procs(j.id))


@pytest.mark.parametrize("nth", [1, 2], ids=["Make job", "Use job"])
@pytest.mark.parametrize("step", KILL_AT)
@pytest.mark.usefixtures("tree")
def test_a_target_run_killed_at_each_step_then_run_again_runs_each_process_once(
        env: Env, make_session: Callable[..., Session], step: str, nth: int) -> None:
    """Held: kill -9 of the submitter at each step of the first or the second job of a target,
    then run_target again at once (within the poll grace): a job the scheduler took is adopted
    and waited for, one it never got is submitted anew (and the first marked NOT SUBMITTED);
    no process runs twice, none is lost, status shows the whole graph."""
    sess = make_session(min_time=SLACK, poll={"grace": GRACE})
    res = subprocess.run([sys.executable, "-c", KILLED_RUN, step, str(nth)], cwd=env.cwd,
                         capture_output=True, text=True, timeout=180)
    killed(res)
    again = sess.dpu.run_target("Use", ns="a,b", s=0.5)
    ids = sess.dpu.get_jobids()
    views = sess.dpu.wait(ids, timeout=120, interval=0.1)
    assert {v.status for v in views} <= {"FINISHED", "NOT SUBMITTED"}, views
    ran = (_ran(sess, "Make"), _ran(sess, "Use"))
    assert ran == (2, 2), [(v.job.sequence, v.counts.line()) for v in views]
    sess.dpu.get_status(ids)   # the half-submitted graph's status: no traceback
    use = again["Use"] or max(j.id for j in sess.dpu._store.jobs() if j.sequence == "Use")
    if _ran(sess, "Use") and sess.dpu._store.job(use).phase == "submitted":
        assert sorted(o["used"] for o in sess.dpu.get_job_result(use, echo=False)) == [["A"], ["B"]]
    assert sess.dpu.run_target("Use", ns="a,b", s=0.5) == {"Make": None, "Use": None}


# -- 2. mallory's cards with hostile after edges ---------------------------------------------------
def _card(**extra: object) -> bytes:
    now = time.time()
    return json.dumps({"v": CARD_VERSION, "user": "dpumallory", "store": "feedbeef", "job_id": 7,
                       "dpu": "testlocal", "sequence": "Bias", "options": {}, "nproc": 1, "ntasks": 1,
                       "created": now, "submitted": now, "jobdir": "/home/dpumallory/mjobs/7.feedbeef",
                       "native_ids": ["1"], "chunk": 1, "time_limit": 60, **extra}).encode()


HOSTILE_AFTER = {
    "zero id": {"jobs": [0], "mode": "ok"},
    "negative id": {"jobs": [-3], "mode": "ok"},
    "bool id": {"jobs": [True], "mode": "ok"},
    "float id": {"jobs": [3.0], "mode": "ok"},
    "string id": {"jobs": ["3"], "mode": "ok"},
    "script id": {"jobs": ["<script>alert(1)</script>"], "mode": "ok"},
    "bignum id": {"jobs": [10**400], "mode": "ok"},
    "id past 2**62": {"jobs": [2**62 + 1], "mode": "ok"},
    "nested list": {"jobs": [[3]], "mode": "ok"},
    "null id": {"jobs": [None], "mode": "ok"},
    "101 ids": {"jobs": list(range(1, 102)), "mode": "ok"},
    "a million ids": {"jobs": list(range(1, 10**6)), "mode": "ok"},
    "jobs a mapping": {"jobs": {"3": 1}, "mode": "ok"},
    "jobs a string": {"jobs": "3,4", "mode": "ok"},
    "script mode": {"jobs": [3], "mode": "<script>alert(1)</script>"},
    "mode a list": {"jobs": [3], "mode": ["ok"]},
    "no mode": {"jobs": [3]},
    "extra key": {"jobs": [3], "mode": "ok", "href": "javascript:alert(1)"},
    "null": None,
    "a list": [3, 4],
    "a number": 3,
    "a string": "3",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_AFTER))
def test_a_card_with_hostile_after_edges_is_refused(name: str) -> None:
    """Held: every out-of-range edge value makes the card a BadCard (one warning on the page)."""
    with pytest.raises(BadCard, match="after"):
        Card.parse(_card(after=HOSTILE_AFTER[name]))


def test_edges_of_mallorys_card_link_only_to_her_own_jobs_and_render_as_text() -> None:
    """Held: a card's edges name job ids of its own user's store: mallory naming the ids of
    alice's jobs (or her own id) links to /job/dpumallory/..., never to alice's pages; the
    page shows each edge as an escaped link."""
    card = Card.parse(_card(after={"jobs": [1, 2, 7], "mode": "each"}))
    row = Row(card.key, card.job_id, card.user, card.sequence, {}, "QUEUED", True, (0, 0, 0, 0, 0), 1, 1, 0,
              card.submitted, None, None, card.after)
    edges = row.to_json(time.time())["after"]
    assert [e["url"] for e in edges] == [f"/job/dpumallory/{j}.feedbeef" for j in (1, 2, 7)]
    now = time.time()
    page = html("job.html.j2", letters=LETTERS, base="/dpu/x%3Cb%3E", dpu="x<b>", now=now,
                job=row.to_json(now), processes=[], earlier=[], logs_cut=0, usage={"measured": 0}).decode()
    assert '<a href="/dpu/x%3Cb%3E/job/dpumallory/1.feedbeef">job 1</a> (each)' in page
    assert "dpualice" not in page
    assert "DPU x&lt;b&gt;" in page and "x<b>" not in page


# -- 1. a job folder planted where one of alice's earlier jobs was -------------------------------
def _chown_tree(root: Path, uid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.lchown(path, uid, uid)


def test_a_planted_job_folder_where_an_earlier_job_was_is_not_reused(
        env: Env, make_session: Callable[..., Session]) -> None:
    """Broke (fixed): alice ran Bias (committed) with her workdir in a shared sticky scratch,
    then moved her workdir and removed the old one (or the scratch purge did). Mallory, who
    reads the job's options and folder on its card, recreates the old job folder with a
    job.json, a result.json saying committed and a master bias of her own. alice's HotPixels
    target skipped Bias (reused the earlier job) and its process read mallory's master bias
    (ctx.inputs). The earlier job's files are now read only when the job folder and every file
    below it are alice's own and no symlink."""
    scratch = env.root / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o1777)
    first = make_session(min_time=SLACK, workdir=str(scratch / "alice-dpu"))
    bias = first.dpu.run("Bias", c="ccd50", C=1, return_jobid=True, **WFI)
    [view] = first.dpu.wait([bias], timeout=90, interval=0.05)
    assert view.counts.line() == "1/0/0/0/0"
    old = Path(first.dpu._store.job(bias).jobdir)
    keep = env.root / "copy"
    shutil.copytree(old, keep, symlinks=True)
    first.dpu.close()
    shutil.rmtree(scratch / "alice-dpu")
    # mallory: the same folder, her own files, her master bias (every pixel hot but one)
    shutil.copytree(keep, old, symlinks=True)
    [master] = old.glob("p/0/work/MasterBias_*.json")
    master.write_text(json.dumps([1.0] * (len(json.loads(master.read_text())) - 1) + [1e9]))
    _chown_tree(scratch / "alice-dpu", MALLORY_UID)

    sess = make_session(min_time=SLACK, workdir=str(env.work / "new"))
    jobs = sess.dpu.run_target("HotPixels", c="ccd50", **WFI)
    assert jobs["Bias"] is not None, "Bias was skipped: the planted job folder was reused"
    said = "\n".join(sess.printed())
    assert "Bias: 0 of 1 process(es) committed earlier" in said, said
    assert sess.dpu._store.job(jobs["HotPixels"]).dpu_options.get("uses") == []
    views = sess.dpu.wait([j for j in jobs.values() if j], timeout=120, interval=0.05)
    assert [v.counts.line() for v in views] == ["1/0/0/0/0", "1/0/0/0/0"], views
    logs = "\n".join(sess.dpu.get_logs(jobs["HotPixels"], echo=False))
    assert old.name not in logs, logs



@pytest.mark.usefixtures("tree")
def test_a_required_folder_swapped_after_planning_is_not_read_by_the_dependent(
        env: Env, make_session: Callable[..., Session]) -> None:
    """Broke (fixed): the same planted folder, put there after run_target checked the earlier
    job but before the dependent ran (it waits for a new Make job): the worker handed it to
    the task as ctx.inputs. Now the worker checks each required work folder up to its job
    folder (a real folder of the job's user) and ends that process E saying why."""
    scratch = env.root / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o1777)
    first = make_session(min_time=SLACK, workdir=str(scratch / "alice-dpu"))
    made = first.dpu.run("Make", n="a", C=1, s=3, return_jobid=True)
    first.dpu.wait([made], timeout=60, interval=0.05)
    old = Path(first.dpu._store.job(made).jobdir)
    first.dpu.close()
    sess = make_session(min_time=SLACK, workdir=str(env.work / "new"))
    jobs = sess.dpu.run_target("Use", s=3)   # Make b and c take 3 s; Use waits for them
    assert sess.dpu._store.job(jobs["Use"]).dpu_options["uses"] == [made]
    keep = env.root / "copy"
    shutil.move(str(scratch / "alice-dpu"), str(keep))
    shutil.copytree(keep, scratch / "alice-dpu", symlinks=True)
    (old / "p" / "0" / "work" / "made.txt").write_text("PLANTED")
    _chown_tree(scratch / "alice-dpu", MALLORY_UID)
    views = sess.dpu.wait([jobs["Make"], jobs["Use"]], timeout=90, interval=0.05)
    assert [v.counts.line() for v in views] == ["2/0/0/0/0", "2/1/0/0/0"], views
    procs = sess.dpu._store.procs(jobs["Use"])
    assert "a required work folder is not read" in procs[0].reason, procs[0].reason
    assert "PLANTED" not in json.dumps(sess.dpu.get_job_result(jobs["Use"], echo=False))


# -- 5. dpu bulk with dpu: auto, killed at each step of its first entry -------------------------
AUTO_NIGHT = """\
dpu: auto
defaults: {dpu_aweversion: night, dpu_mem: 100}
runs:
  - {key: a, sequence: Null, options: {m: a}}
  - {key: b, sequence: Null, options: {m: b}}
"""


@pytest.mark.parametrize("step", BEFORE + AFTER)
def test_bulk_auto_killed_at_each_step_then_rerun_routes_and_submits_each_entry_once(
        env: Env, step: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Held: the killed entry keeps the DPU its job was recorded on (adopted there, or proved
    not submitted and submitted there again); the other entry is routed once; nothing runs twice."""
    for name in ("one", "two"):
        env.write_dpu(name, slots=1, awe_versions=ROUTING_NIGHT, poll={"grace": GRACE}, min_time=SLACK)
    manifest = env.cwd / "auto.yaml"
    manifest.write_text(AUTO_NIGHT, encoding="utf-8")
    killed(bulk_run(env, manifest, f"{step}:KILL"))
    [first] = all_jobs()
    assert first.dpu == "one"
    capsys.readouterr()
    assert cli.main(["bulk", str(manifest), "--json"]) == 0
    entries = {e["key"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert entries["a"]["dpu"] == "one" and entries["b"]["dpu"] in ("one", "two")
    assert entries["a"]["state"] == ("submitted" if step in BEFORE else "skipped")
    views = []
    for name in ("one", "two"):
        proc = Processor(name, out=io.StringIO(), session_log=False)
        try:
            mine = [j.id for j in all_jobs() if j.dpu == name]
            views += proc.wait(mine, timeout=120, interval=0.2) if mine else []
        finally:
            proc.close()
    done = sorted((v.job.options.get("message") or v.job.options.get("m"), v.counts.line())
                  for v in views if v.status == "FINISHED")
    assert [m for m, _ in done] == ["a", "b"] and all(c == "1/0/0/0/0" for _, c in done), views
    assert sum(v.status == "NOT SUBMITTED" for v in views) == (1 if step in BEFORE else 0)
    assert len(views) == (3 if step in BEFORE else 2)


# -- 1. two run_target of the same target at once (two terminals, two notebooks) ---------------
RACING_RUN = '''
import os, sys, time
from pathlib import Path
from dpu_slurm import Processor, target
here, other = Path(sys.argv[1]), Path(sys.argv[2])
plain = target.submit
def submit(*args, **kwargs):
    here.touch()                     # planned: wait (at most 5 s) until the other one has too
    end = time.monotonic() + 5
    while not other.exists() and time.monotonic() < end:
        time.sleep(0.05)
    return plain(*args, **kwargs)
target.submit = submit
Processor("testlocal", session_log=False).run_target("Use", ns="a,b")
'''


@pytest.mark.usefixtures("tree")
def test_two_run_targets_at_once_run_each_process_once(env: Env,
                                                       make_session: Callable[..., Session]) -> None:
    """Broke (fixed): both planned before either submitted, so both submitted Make and Use
    for the same processes. Now one run_target at a time per DPU_HOME plans and submits
    (flock, released if it dies); the second sees the first one's jobs under way."""
    sess = make_session(min_time=SLACK)
    flags = [env.root / "planned-1", env.root / "planned-2"]
    procs = [subprocess.Popen([sys.executable, "-c", RACING_RUN, str(flags[i]), str(flags[1 - i])],
                              cwd=env.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    views = sess.dpu.wait(sess.dpu.get_jobids(), timeout=120, interval=0.1)
    assert {v.status for v in views} == {"FINISHED"}, views
    ran = (_ran(sess, "Make"), _ran(sess, "Use"))
    assert ran == (2, 2), [(v.job.sequence, v.counts.line()) for v in views]


def test_a_target_name_with_control_characters_is_refused_as_text() -> None:
    """Held: an odd target name is a SequenceError that shows it escaped."""
    with pytest.raises(SequenceError) as got:
        order(Catalog.load(packaged("examples") / "awepipe"), "\x1b[2JBias")
    assert "\x1b" not in str(got.value) and "did you mean 'Bias'" in str(got.value)
