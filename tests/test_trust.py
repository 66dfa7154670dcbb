"""Trust checks that need no second user: card fields, temp names, the index root, terminal text.
The cross-user cases are in test_users.py."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from dpu_slurm import cli
from dpu_slurm.config import get_dpu
from dpu_slurm.index import CARD_VERSION, MAX_EARLIER, MAX_REASON, BadCard, Card, earlier_of, max_nproc
from dpu_slurm.transport.local import LocalTransport
from dpu_slurm.web.mirror import Mirror
from dpu_slurm.worker import write_json
from tests.conftest import Env, Session

Capture = pytest.CaptureFixture[str]


def card(**fields: Any) -> bytes:
    now = time.time()
    data = {"v": CARD_VERSION, "user": "nobody", "store": "feedbeef", "job_id": 7, "dpu": "testlocal",
            "sequence": "Bias", "options": {"i": "WFI", "n": 3, "x": 1.5, "f": False, "l": ["a", 2],
                                            "z": None},
            "nproc": 4, "ntasks": 1, "created": now, "submitted": now, "jobdir": "/w/jobs/7.feedbeef",
            "native_ids": ["1"], "chunk": 1000, "time_limit": 600}
    data.update(fields)
    return json.dumps(data).encode()


def test_a_good_card_parses() -> None:
    assert Card.parse(card()).options["l"] == ["a", 2]


def test_a_parameter_set_option_is_kept_on_the_card() -> None:
    """ReadNoise's and HotPixels' pars={} (a mapping of names to values) is a card's option:
    refusing it left those jobs off the queue page."""
    parsed = Card.parse(card(options={"pars": {"max_iter": 5, "tags": ["a", "b"]}, "empty": {}}))
    assert parsed.options == {"pars": {"max_iter": 5, "tags": ["a", "b"]}, "empty": {}}


@pytest.mark.parametrize("raw, message", [
    (card(options="boom"), "options must be a mapping"),
    (card(options={"a": {"b": {"c": 1}}}), "option 'a'['b'] is a dict"),
    (card(options={"a": {"": 1}}), "a name in option 'a' must be a text"),
    (card(options={"a": {str(i): i for i in range(1001)}}), "option 'a' holds more than"),
    (card(options={"a": [[1]]}), "option 'a' is a list"),
    (card(nproc=3000000), "nproc must be an integer from 1 to 100000, not 3000000"),
    (card(nproc=True), "nproc must be an integer"),
    (card(job_id="7"), "job_id must be an integer"),
    (card(created=1e300), "created 1e+300 is not a time"),
    (card(jobdir="w/jobs/7"), "jobdir is not a plain absolute path"),
    (card(jobdir="/w/../etc"), "jobdir is not a plain absolute path"),
    (card(user="../x"), "is not a user name"),
    (card(sequence="x" * 2000), "sequence must be a text of 1 to 1000 characters"),
    (card(extra=1), "fields missing or unknown: extra"),
    (card(v=2), "card version 2"),
    (card().replace(b'"WFI"', b'"\\ud800"'), "lone surrogate"),
    (card().replace(b'"x": 1.5', b'"x": NaN'), "not a JSON card (NaN is not a number a card may hold)"),
    (b"[" * 100000 + b"]" * 100000, "not a JSON card"),
    (b"\xff\xfe", "not a JSON card"),
    (b"[]", "not a JSON object"),
    (card(earlier="E"), "earlier must be a list of at most 1000 attempts"),
    (card(earlier=[[1, 1, "E", ""]] * 1001), "earlier must be a list of at most 1000 attempts"),
    (card(earlier=[[1, 1, "E"]]), "each attempt is [index, attempt, outcome, reason]"),
    (card(earlier=[[4, 1, "E", ""]]), "earlier index must be an integer from 0 to 3, not 4"),
    (card(earlier=[[1, 0, "E", ""]]), "earlier attempt must be an integer from 1 to 1000000, not 0"),
    (card(earlier=[[1, True, "E", ""]]), "earlier attempt must be an integer"),
    (card(earlier=[[1, 1, "E", ""], [1, 1, "N", ""]]), "earlier lists attempt 1 of process 1 twice"),
    (card(earlier=[[1, 1, "X", ""]]), "earlier outcome 'X' of process 1 must be 1 to 1 letters among N"),
    (card(earlier=[[1, 1, "EE", ""]]), "earlier outcome 'EE' of process 1 must be 1 to 1 letters"),
    (card(earlier=[[1, 1, "", ""]]), "earlier outcome '' of process 1"),
    (card(earlier=[[1, 1, "E", "r" * 301]]), "earlier reason of process 1 must be a text of at most 300"),
    (card(earlier=[[1, 1, "E", 5]]), "earlier reason of process 1 must be a text"),
])
def test_a_bad_card_says_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(BadCard) as caught:
        Card.parse(raw)
    assert message in str(caught.value)


def test_a_card_may_carry_earlier_attempts_and_older_cards_still_parse() -> None:
    old = Card.parse(card())   # written before cards had `earlier`
    assert old.earlier == [] and old.current_attempts() == {}
    assert b"earlier" not in old.dump()   # an older page still reads a card without history
    new = Card.parse(card(earlier=[[1, 1, "E", "boom"], [1, 2, "A", ""], [3, 1, "E", ""]]))
    assert new.current_attempts() == {1: 3, 3: 2}
    assert Card.parse(new.dump()).earlier == new.earlier


def test_earlier_of_keeps_all_but_each_latest_attempt_with_reasons_cut() -> None:
    rows = [(1, 1, "E", "x" * 500, 1.0), (1, 2, "N", "", None), (2, 1, "N", "", None),
            (3, 1, "E", "", 1.0), (3, 2, "A", "late", 2.0), (3, 3, "", "", None)]
    assert earlier_of(rows) == [[1, 1, "E", "x" * MAX_REASON], [3, 1, "E", ""], [3, 2, "A", "late"]]
    many = [(i, a, "E", "", 1.0) for i in range(600) for a in (1, 2, 3)]
    kept = earlier_of(many)   # 1200 earlier attempts: the newest 1000, so each index's attempt 2 stays
    assert len(kept) == MAX_EARLIER and all([i, 2, "E", ""] in kept for i in range(600))


def test_max_nproc_comes_from_the_config(env: Env) -> None:
    env.write_dpu("testlocal", web={"max_nproc": 10})
    assert max_nproc(get_dpu("testlocal")) == 10
    Card.parse(card(nproc=10), 10)
    with pytest.raises(BadCard, match="from 1 to 10, not 11"):
        Card.parse(card(nproc=11), 10)


def test_job_files_never_follow_a_symlink_at_the_old_temp_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / "jobdir"
    folder.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 5):   # the names the old code used
        for name in ("job.json", "status.json"):
            os.symlink(victim, folder / f".{name}.{pid}.tmp")
    LocalTransport().write_files({str(folder / "job.json"): b"{}"})
    write_json(folder / "status.json", {"state": "DONE"})
    assert victim.read_text() == "keep"
    assert json.loads((folder / "job.json").read_text()) == {}
    assert oct((folder / "status.json").stat().st_mode & 0o777) == "0o644"
    assert not [p for p in folder.iterdir() if not p.is_symlink() and p.name.endswith(".tmp")]


@pytest.mark.parametrize("mode, problems", [
    (0o1777, []),
    (0o755, ["is not writable by other users (mode 755)", "is not sticky (mode 755)"]),
    (0o777, ["is not sticky (mode 777)"]),
])
def test_config_check_says_what_is_wrong_with_a_shared_index(env: Env, capsys: Capture, mode: int,
                                                            problems: list) -> None:
    root = env.root / "shared" / "index"
    root.mkdir(parents=True)
    os.chmod(root, mode)
    path = env.write_dpu("testlocal", job_index=str(root))
    assert cli.main(["config", "check", str(path)]) == (2 if problems else 0)
    err = capsys.readouterr().err
    for problem in problems:
        assert f"{path}: job_index {root} {problem}" in err
    assert (f"fix: install -d -m 1777 {root}" in err) == bool(problems)


def test_config_check_refuses_a_symlinked_index_root(env: Env, capsys: Capture) -> None:
    real = env.root / "real"
    real.mkdir(mode=0o1777)
    os.symlink(real, env.root / "index")
    path = env.write_dpu("testlocal", job_index=str(env.root / "index"))
    assert cli.main(["config", "check", str(path)]) == 2
    assert f"is a symbolic link (to {real})" in capsys.readouterr().err


def test_dpu_logs_shows_control_characters_and_keeps_tabs(session: Session, capsys: Capture) -> None:
    jid = session.dpu.run("Null", m="\x1b[2Jgone\x08back\tcol\x07", return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    assert cli.main(["logs", "--dpu", "testlocal", str(jid)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x08" not in out and "\x07" not in out
    assert re.search(r"Message: \\x1b\[2Jgone\\x08back\tcol\\x07$", out, re.M), out


def test_text_from_a_card_that_cannot_be_encoded_does_not_fail_the_page(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # The prompt refuses lone surrogates now (schema.check_value); a card written by an older
    # client may still hold one, so let this one through to check the page's own defence.
    import dpu_slurm.catalog as catalog_mod

    monkeypatch.setattr(catalog_mod, "check_value", lambda value, at: value)
    monkeypatch.setattr(catalog_mod, "check_options", lambda values, at: dict(values))
    jid = session.dpu.run("Null", m="bad \ud800 text", return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    m = Mirror(get_dpu("testlocal"), session.dpu._store)
    try:
        m.refresh(force=True)
        row = m.rows()[0]
        page = json.dumps([row.to_json(time.time()), m.job(row.key)], default=str, ensure_ascii=False)
        page.encode("utf-8")
        assert "bad \ufffd text" in page
    finally:
        m.close()


def test_the_cards_of_one_user_share_a_process_budget(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import dpu_slurm.web.mirror as mirror_mod

    monkeypatch.setattr(mirror_mod, "USER_PROCS", 10)
    index = env.root / "index"
    folder = index / "root"
    folder.mkdir(parents=True)
    env.write_dpu("testlocal", job_index=str(index))
    for n in range(1, 5):
        jobdir = env.root / "jobs" / str(n)
        jobdir.mkdir(parents=True)
        (folder / f"{n}.feedbeef.json").write_bytes(card(user="root", job_id=n, jobdir=str(jobdir)))
        os.utime(folder / f"{n}.feedbeef.json", (time.time() + n, time.time() + n))
    m = Mirror(get_dpu("testlocal"))
    try:
        m.refresh(force=True)
        assert sorted(r.job_id for r in m.rows()) == [3, 4]   # the newest cards, 4 processes each
        assert "the cards of root claim more than 10 processes in all" in m.warnings[0]
    finally:
        m.close()


def test_a_card_rewritten_or_arriving_after_the_own_job_adds_no_warning(session: Session) -> None:
    jid = session.dpu.run("Null", return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    [path] = (Path(session.dpu._session.workdir()) / "index").glob("*/*.json")
    saved = path.read_bytes()
    m = Mirror(get_dpu("testlocal"), session.dpu._store)
    try:
        path.unlink()
        m.refresh(force=True)                 # the job shows from our own store
        path.write_bytes(saved)               # then its card arrives
        m.refresh(force=True)
        path.write_bytes(saved)               # and is rewritten
        os.utime(path, (time.time() + 5, time.time() + 5))
        m.refresh(force=True)
        assert [r.job_id for r in m.rows()] == [jid] and m.warnings == []
    finally:
        m.close()


def test_a_card_the_page_would_refuse_is_not_written_and_the_submit_succeeds(
        make_session: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = make_session(web={"max_nproc": 2})
    jid = s.dpu.run("Null", n=3, return_jobid=True)
    assert s.dpu.wait(jid, timeout=60, interval=0.05)[0].counts.letters == (3, 0, 0, 0, 0)
    assert not list((Path(s.dpu._session.workdir()) / "index").glob("*/*.json"))
    assert "nproc must be an integer from 1 to 2, not 3" in caplog.text
    assert "the job is submitted, but the queue page will not list it" in caplog.text


def test_a_rewritten_card_that_moves_its_job_folder_takes_the_job_off_the_page(session: Session) -> None:
    """A changed card updates its job only when it is still the same job: same user, uid, job
    folder and size (a rerun); anything else is refused, saying why."""
    jid = session.dpu.run("Null", return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    [path] = (Path(session.dpu._session.workdir()) / "index").glob("*/*.json")
    m = Mirror(get_dpu("testlocal"))   # no own store: only the card shows the job
    try:
        m.refresh(force=True)
        assert [r.job_id for r in m.rows()] == [jid]
        data = json.loads(path.read_bytes())
        moved = Path(data["jobdir"]).parent / "elsewhere"
        moved.mkdir()
        path.write_text(json.dumps({**data, "jobdir": str(moved)}))
        os.utime(path, (time.time() + 5, time.time() + 5))
        m.refresh(force=True)
        assert m.rows() == []
        assert "changed its job, job folder, owner or size" in m.warnings[0]
    finally:
        m.close()


def test_the_first_card_of_a_job_shown_from_our_own_store_brings_its_attempts(session: Session) -> None:
    """The page may list our own job before its card is written; the card that comes later (here
    one a rerun wrote) still updates the job: its attempts and history show."""
    jid = session.dpu.run("Null", n=2, return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    [path] = (Path(session.dpu._session.workdir()) / "index").glob("*/*.json")
    data = json.loads(path.read_bytes())
    m = Mirror(get_dpu("testlocal"), session.dpu._store)
    try:
        path.unlink()
        m.refresh(force=True)                 # the job shows from our own store
        path.write_text(json.dumps({**data, "earlier": [[1, 1, "E", "boom"]]}))
        m.refresh(force=True)
        key = next(iter(m.ids))
        detail = m.job(key)
        assert detail is not None and m.warnings == []
        assert [p["attempt"] for p in detail["processes"]] == [1, 2]
        assert detail["earlier"] == [{"index": 1, "attempt": 1, "outcome": "E", "reason": "boom"}]
    finally:
        m.close()
