"""Red team of issue 12 (rerun, retries, usage) as a hostile second Unix user.

dpumallory writes hostile `earlier` attempts in her job cards, rewrites a card the page has read
to claim dpualice's job folder or another size, and plants hostile `usage` figures in her
worker records; the page (run as root, see tests/test_users.py) must refuse or ignore each,
keep serving the other jobs and never read alice's files as hers.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from dpu_slurm import Processor
from dpu_slurm.session import open_store
from dpu_slurm.transport.local import LocalTransport
from tests import test_users
from tests.conftest import Env
from tests.test_crash import GRACE, killed, settle
from tests.test_users import ALICE, MALLORY, SECRET, card, everything, mirror, mjobdir, plant, py

shared = test_users.shared   # the fixtures of the cross-user tests
index = test_users.index

pytestmark = pytest.mark.users


def _bump(path: Path) -> None:
    """A later mtime, so the page sees the rewrite even within one clock tick."""
    later = time.time() + 5
    os.utime(path, (later, later))


# -- 1. a hostile `earlier` field: one warning, the other jobs stay -------------------------
HOSTILE_EARLIER: Dict[str, Any] = {
    "too many": [[0, a, "N", ""] for a in range(1, 1003)],
    "nan attempt": [[0, float("nan"), "E", ""]],
    "inf index": [[float("inf"), 1, "E", ""]],
    "float attempt": [[0, 1.0, "E", ""]],
    "bool index": [[True, 1, "E", ""]],
    "string": "earlier",
    "mapping": {"0": [1, "E", ""]},
    "short entry": [[0, 1, "E"]],
    "long entry": [[0, 1, "E", "", "x"]],
    "index out of range": [[1, 1, "E", ""]],
    "negative index": [[-1, 1, "E", ""]],
    "attempt zero": [[0, 0, "E", ""]],
    "attempt huge": [[0, 10**7, "E", ""]],
    "attempt bignum": [[0, 10**400, "E", ""]],
    "duplicate": [[0, 1, "E", ""], [0, 1, "A", ""]],
    "bad letter": [[0, 1, "X", ""]],
    "empty outcome": [[0, 1, "", ""]],
    "outcome longer than ntasks": [[0, 1, "EE", ""]],
    "reason too long": [[0, 1, "E", "r" * 301]],
    "reason not text": [[0, 1, "E", ["<b>"]]],
    "null entry": [None],
}


@pytest.mark.parametrize("name", sorted(HOSTILE_EARLIER))
def test_a_hostile_earlier_is_refused_with_one_warning_and_the_rest_stays(
        shared: Path, index: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    j = mjobdir()
    plant(shared, index, "os.makedirs(J + '-ok/p/0', exist_ok=True)",
          {"7.feedbeef.json": card(MALLORY, j, earlier=HOSTILE_EARLIER[name]),
           "8.feedbeef.json": card(MALLORY, j + "-ok", 8, sequence="Fine")})
    m = mirror(LocalTransport())
    try:
        with caplog.at_level("WARNING"):
            m.refresh(force=True)
            m.refresh(force=True)   # said once, not at every refresh
        assert [r.key for r in m.rows()] == [f"{MALLORY}/8.feedbeef"]
        assert m.job(f"{MALLORY}/8.feedbeef") is not None
        logged = [r.getMessage() for r in caplog.records if "job card ignored" in r.getMessage()]
        assert len(logged) == 1 and f"{MALLORY}/7.feedbeef.json: " in logged[0], logged
        assert "earlier" in logged[0] or "not a JSON card" in logged[0], logged
        assert m.warnings[0].startswith("1 job card(s) ignored: ")
    finally:
        m.close()


def test_a_script_in_an_earlier_reason_is_kept_as_text(shared: Path, index: Path) -> None:
    """A reason is free text of at most 300 characters: the card is fine, the page must show it
    as text (the JSON carries it verbatim; HTML escaping is the page template's job)."""
    reason = "<script>alert(1)</script>\x1b[2J"
    plant(shared, index, "", {"7.feedbeef.json": card(MALLORY, mjobdir(),
                                                        earlier=[[0, 1, "E", reason]])})
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        shown = m.job(f"{MALLORY}/7.feedbeef")
        assert shown is not None
        assert "\x1b" not in json.dumps(shown["earlier"], ensure_ascii=False, default=repr)
    finally:
        m.close()


# -- 2. a card rewritten after the page read it ------------------------------------------
def _alice_job(shared: Path) -> str:
    py(ALICE, f"""
        import os
        J = os.path.expanduser("~/work/ajob")
        os.makedirs(J + "/p/0", exist_ok=True)
        os.chmod(os.path.expanduser("~/work"), 0o755)
        with open(J + "/p/0/log", "w") as fh:
            fh.write({SECRET!r} + "\\n")
        with open(J + "/p/0/status.json", "w") as fh:
            fh.write('{{"state": "DONE", "tasks": ["N"], "reason": "{SECRET}", "started": 1, "ended": 2}}')
    """, shared)
    return os.path.expanduser(f"~{ALICE}/work/ajob")


REWRITES = {
    "alice's job folder": lambda a: {"jobdir": a},
    "alice's job folder as a rerun": lambda a: {"jobdir": a, "native_ids": ["2"],
                                               "earlier": [[0, 1, "E", "rerun"]]},
    "more processes": lambda a: {"nproc": 2, "earlier": [[1, 1, "E", ""]]},
    "more tasks": lambda a: {"ntasks": 2},
    "another job id": lambda a: {"job_id": 9},
    "alice's name": lambda a: {"user": ALICE, "jobdir": a},
}


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_a_card_rewritten_to_claim_more_is_refused_and_reads_no_file_of_alice(
        shared: Path, index: Path, rewrite: str) -> None:
    alice = _alice_job(shared)
    j = mjobdir()
    plant(shared, index, "os.makedirs(J + '-ok/p/0', exist_ok=True)",
          {"7.feedbeef.json": card(MALLORY, j),
           "8.feedbeef.json": card(MALLORY, j + "-ok", 8, sequence="Fine")})
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        assert sorted(r.key for r in m.rows()) == [f"{MALLORY}/7.feedbeef", f"{MALLORY}/8.feedbeef"]
        path = index / MALLORY / "7.feedbeef.json"
        new = {**card(MALLORY, j), **REWRITES[rewrite](alice)}
        py(MALLORY, f"""
            import json
            with open({str(path)!r}, "w") as fh:
                json.dump(json.loads({json.dumps(new)!r}), fh)
        """, shared)
        _bump(path)
        m.refresh(force=True)
        keys = [r.key for r in m.rows()]
        assert f"{MALLORY}/8.feedbeef" in keys
        shown = [m.job(k) for k in keys]
        assert SECRET not in everything(m) + json.dumps(shown, default=repr)
        assert alice not in m.transport.owners, "alice's folder was mapped to another uid"
        assert all(c.jobdir != alice for c in m.cards.values())
        assert m.warnings and "7.feedbeef.json" in m.warnings[0] + " ".join(m.bad)
    finally:
        m.close()


def test_a_rewritten_card_that_follows_a_rerun_is_taken(shared: Path, index: Path) -> None:
    """The path the refusals guard: a real rerun's card (new ids, earlier attempts) follows."""
    j = mjobdir()
    plant(shared, index, "", {"7.feedbeef.json": card(MALLORY, j)})
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        path = index / MALLORY / "7.feedbeef.json"
        new = card(MALLORY, j, native_ids=["2"], earlier=[[0, 1, "E", "rerun"]])
        py(MALLORY, f"""
            import json
            with open({str(path)!r}, "w") as fh:
                json.dump(json.loads({json.dumps(new)!r}), fh)
        """, shared)
        _bump(path)
        m.refresh(force=True)
        assert [r.key for r in m.rows()] == [f"{MALLORY}/7.feedbeef"]
        assert m.cards[m.ids[f"{MALLORY}/7.feedbeef"]].earlier == [[0, 1, "E", "rerun"]]
        assert not m.warnings
    finally:
        m.close()


# -- 3. hostile usage figures in her worker records ---------------------------------------
USAGES: List[str] = [
    '{"wall_s": -1, "cpu_s": -5, "max_rss_kb": -1}',
    '{"wall_s": NaN, "cpu_s": Infinity, "max_rss_kb": -Infinity}',
    '{"wall_s": 1e300, "cpu_s": 1e300, "max_rss_kb": 1e300}',
    '{"wall_s": "5", "cpu_s": true, "max_rss_kb": null}',
    '{"wall_s": {"a": [1]}, "cpu_s": [1, 2], "max_rss_kb": {"x": {}}}',
    '"usage"',
    '[1, 2, 3]',
    '{"wall_s": 1' + '0' * 400 + '}',
    '{"cpu_s": 1' + '0' * 400 + ', "max_rss_kb": -1' + '0' * 400 + '}',
]


def _usage_records(usages: List[str]) -> str:
    lines = ["import os"]
    for i, usage in enumerate([*usages, '{"wall_s": 3, "cpu_s": 2, "max_rss_kb": 2048}']):
        record = ('{"state": "DONE", "tasks": ["N"], "reason": "", "started": 1, "ended": 2, '
                  f'"usage": {usage}}}')
        lines += [f"os.makedirs(J + '/p/{i}', exist_ok=True)",
                  f"open(J + '/p/{i}/status.json', 'w').write({record!r})"]
    return "\n".join(lines)


def _check_usage_page(shared: Path, index: Path, usages: List[str]) -> None:
    n = len(usages) + 1
    plant(shared, index, _usage_records(usages) + "\nos.makedirs(J + '-ok/p/0', exist_ok=True)",
          {"7.feedbeef.json": card(MALLORY, mjobdir(), nproc=n, native_ids=[]),
           "8.feedbeef.json": card(MALLORY, mjobdir() + "-ok", 8, sequence="Fine")})
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        assert sorted(r.key for r in m.rows()) == [f"{MALLORY}/7.feedbeef", f"{MALLORY}/8.feedbeef"]
        shown = m.job(f"{MALLORY}/7.feedbeef")
        assert shown is not None
        usage = shown["usage"]
        json.dumps(usage, allow_nan=False)   # no NaN or infinity reaches the page
        assert usage["measured"] == 1, usage   # only the honest record's figures
        assert usage["time"]["max_s"] == 3.0 and usage["memory"]["max_mb"] == 2.0, usage
    finally:
        m.close()


def test_hostile_usage_figures_are_ignored_and_the_page_serves_on(shared: Path, index: Path) -> None:
    _check_usage_page(shared, index, USAGES[:7])


def test_a_bignum_usage_figure_does_not_take_the_page_down(shared: Path, index: Path) -> None:
    """A 400-digit integer cannot become a float: it was an OverflowError that stopped every
    refresh of the page (usage.worker_figures checked isfinite before the bound)."""
    _check_usage_page(shared, index, USAGES[7:])


# -- 4. a retry applied by a poll, killed at each step -------------------------------------
@pytest.mark.parametrize("step", ["record", "accepted", "chunk", "stored"])
def test_a_poll_killed_while_applying_a_retry_is_settled_by_the_next_poll(env: Env, step: str) -> None:
    """The first submit runs clean; the poll that finds processes 1 and 3 ended E applies the
    retry policy (max 1) and is killed at `step`. The next poll settles the job: every process
    at most at attempt 2, no third attempt, nothing left queued or submitting."""
    env.write_dpu(poll={"grace": GRACE})
    code = (f"import os\nfrom dpu_slurm import Processor\n"
            f"p = Processor('testlocal', session_log=False)\n"
            f"jid = p.run('Null', n=4, ff='1,3', dpu_mem=100, retries={{'max': 1, 'on': 'E'}}, "
            f"return_jobid=True)\n"
            f"os.environ['DPU_FAULT'] = {step + ':KILL'!r}\n"
            f"p.wait(jid, timeout=120, interval=0.05)\n")
    killed(subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "DPU_FAULT"}, timeout=180))
    [view] = settle("testlocal")
    jid = view.job.id
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    try:
        for _ in range(3):   # later polls change nothing
            again = dpu.wait(jid, timeout=0)[0]
    finally:
        dpu.close()
    store = open_store()
    try:
        history = [(i, a, o) for i, a, o, _, _ in store.attempts(jid)]
        numbers = store.attempt_numbers(jid)
        job = store.job(jid)
    finally:
        store.close()
    assert (1, 1, "E") in history and (3, 1, "E") in history
    assert numbers == {0: 1, 1: 2, 2: 1, 3: 2}, (numbers, history)
    assert all(a <= 2 for _, a, _ in history), history
    assert again.status == "FINISHED" and again.counts.letters == view.counts.letters
    assert view.counts.letters in ((4, 0, 0, 0, 0), (2, 0, 0, 2, 0)), view.counts.letters
    assert job.phase == "submitted", job.phase
    for idx in (0, 2):   # the processes that ended N ran once
        assert not (Path(job.jobdir) / "p" / str(idx) / "attempt-1").exists()
