"""`dpu web` over HTTP (no browser): every user's jobs, filters, escaping, no paths, the API."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from dpu_slurm import cli, tokens
from dpu_slurm.config import get_dpu
from dpu_slurm.errors import OptionError
from dpu_slurm.index import CARD_VERSION
from dpu_slurm.session import open_store
from dpu_slurm.web.api import parse
from dpu_slurm.web.server import QueueServer, make_server
from tests.conftest import REPO, Env, Session, wait_until

Capture = pytest.CaptureFixture[str]
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@contextmanager
def serving(dpu: str = "testlocal", refresh: float = 1.0,
            **options: Any) -> Iterator[Tuple[str, QueueServer]]:
    """A live server on a free loopback port, in a thread, once its first snapshot is made;
    stopped (by this test) at the end. It polls every 0.1 s: tests look right after a change."""
    store = open_store()
    server = make_server(get_dpu(dpu), store, port=0, refresh=refresh,
                         **{"poll_floor": 0.1, **options})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.uvicorn.started and server.app.refresher.refreshes > 0)
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        thread.join(20)
        server.server_close()
        store.close()


def listed(url: str, jid: int) -> bool:
    """Whether the page's snapshot has job `jid` yet."""
    return jid in [j["jobid"] for j in get_json(url.rstrip("/") + "/api/queue")["jobs"]]


def http(url: str, data: Optional[bytes] = None, method: Optional[str] = None,
         headers: Optional[Dict[str, str]] = None) -> Tuple[int, Message, bytes]:
    """Status, headers (names case-insensitive) and body."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def get_json(url: str) -> Any:
    status, _, body = http(url)
    assert status == 200, body
    return json.loads(body)


def finished(session: Session, sequence: str, **options: Any) -> int:
    jid = session.dpu.run(sequence, return_jobid=True, **options)
    assert isinstance(jid, int)
    assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].status == "FINISHED"
    return jid


def other_users_job(env: Env, user: str = "nobody", job_id: int = 7, letters: str = "N",
                    forged_folder: Optional[str] = None) -> Path:
    """A job of another OS user on the test DPU, as their session would leave it: a card in
    the job index (in their own folder, owned by them) and the worker's record in their jobdir."""
    jobdir = env.work / f"{user}-home" / "jobs" / f"{job_id}.feedbeef"
    (jobdir / "p" / "0").mkdir(parents=True)
    now = time.time()
    (jobdir / "p" / "0" / "status.json").write_text(json.dumps(
        {"state": "DONE", "tasks": list(letters), "reason": "", "started": now - 65, "ended": now - 5}))
    folder = env.work / "testlocal" / "index" / (forged_folder or user)
    folder.mkdir(parents=True, exist_ok=True)
    card = {"v": CARD_VERSION, "user": forged_folder or user, "store": "feedbeef", "job_id": job_id,
            "dpu": "testlocal", "sequence": "Bias", "options": {"instrument": "WFI", "chip": "ccd50"},
            "nproc": 1, "ntasks": len(letters), "created": now - 70, "submitted": now - 70,
            "jobdir": str(jobdir), "native_ids": ["1"], "chunk": 1000, "time_limit": 600}
    (folder / f"{job_id}.feedbeef.json").write_text(json.dumps(card))
    uid = pwd.getpwnam(user).pw_uid
    for path in [folder, *folder.iterdir(), jobdir.parent.parent, *jobdir.parent.parent.rglob("*")]:
        os.chown(path, uid, -1)
    return jobdir


def test_queue_lists_every_users_jobs_with_their_counters(session: Session, env: Env) -> None:
    ok = finished(session, "Null", n=3)
    bad = finished(session, "Null>Null", x=True)
    other_users_job(env, letters="NE")
    me = pwd.getpwuid(os.getuid()).pw_name
    with serving() as (url, _):
        data = get_json(url + "/api/queue")
    rows = {(j["user"], j["jobid"]): j for j in data["jobs"]}
    assert set(rows) == {(me, ok), (me, bad), ("nobody", 7)}
    assert rows[(me, ok)]["counters"] == {"N": 3, "E": 0, "A": 0, "S": 0, "U": 0}
    assert rows[(me, bad)]["counters"] == {"N": 0, "E": 1, "A": 0, "S": 1, "U": 0}
    assert rows[(me, bad)]["ok"] is False and rows[(me, ok)]["ok"] is True
    theirs = rows[("nobody", 7)]
    assert (theirs["status"], theirs["counters"]["N"], theirs["counters"]["E"]) == ("FINISHED", 1, 1)
    assert theirs["running_time"] == pytest.approx(60, abs=1)
    assert data["users"] == sorted([me, "nobody"]) and data["warnings"] == []


def test_filters_by_user_and_status(session: Session, env: Env) -> None:
    done = finished(session, "Null")
    slow = session.dpu.run("Null", s=30, return_jobid=True)
    other_users_job(env)
    with serving() as (url, _):
        wait_until(lambda: any(j["status"] == "RUNNING" for j in get_json(url + "/api/queue")["jobs"]))
        running = get_json(url + "/api/queue?status=RUNNING")["jobs"]
        fin = get_json(url + "/api/queue?status=finished")["jobs"]
        theirs = get_json(url + "/api/queue?user=nobody")["jobs"]
        page = http(url + "/?status=RUNNING")[2].decode()
    assert [j["jobid"] for j in running] == [slow]
    assert sorted((j["user"], j["jobid"]) for j in fin) == sorted([("nobody", 7), (fin[0]["user"], done)])
    assert [(j["user"], j["jobid"]) for j in theirs] == [("nobody", 7)]
    assert page.count('<tr data-key=') == 1 and 'data-status="RUNNING"' in page
    session.dpu.cancel_job(slow, force=True)


def test_a_card_in_someone_elses_folder_is_ignored_with_a_warning(session: Session, env: Env) -> None:
    other_users_job(env, "nobody", forged_folder="daemon")   # nobody posing as daemon
    with serving() as (url, _):
        data = get_json(url + "/api/queue")
    assert data["jobs"] == []
    assert data["warnings"] == ["1 job card(s) ignored: daemon: belongs to uid 65534 (nobody), "
                                "not to uid 1 (daemon)"]


def test_job_text_is_escaped_and_only_our_script_may_run(session: Session) -> None:
    jid = finished(session, "Null", m=HOSTILE)
    with serving() as (url, _):
        status, headers, body = http(url + "/")
        page = body.decode()
        key = get_json(url + "/api/queue")["jobs"][0]["url"]
        job_page = http(url + key)[2].decode()
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for html in (page, job_page):
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x" in html
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/common.js">',
                                                        '<script src="/static/queue.js">'] * (html is page)
        assert "<img" not in html
    assert f"Job {jid} of " in job_page


def test_pages_show_no_paths_of_the_users(session: Session, env: Env) -> None:
    workdir = str(env.work / "testlocal")
    jid = finished(session, "Null", m=f"reading {workdir}/data/night.fits", x=True)
    other_users_job(env)
    with serving() as (url, _):
        texts = [http(url + path)[2].decode() for path in ("/", "/api/queue")]
        keys = [j["url"] for j in get_json(url + "/api/queue")["jobs"]]
        texts += [http(url + key)[2].decode() for key in keys]
        texts += [http(url + "/api" + key)[2].decode() for key in keys]
    assert all(str(env.root) not in text for text in texts), "a user's folder leaked into a page"
    mine = next(t for t in texts if f"Job {jid} of" in t)
    assert "Message: reading $WORKDIR/data/night.fits" in mine
    assert "RuntimeError: Null task asked to fail" in mine


def test_job_page_has_the_processes_and_their_logs(session: Session) -> None:
    jid = finished(session, "Null", n=2, m="hello page")
    with serving() as (url, _):
        row = get_json(url + "/api/queue")["jobs"][0]
        detail = get_json(url + "/api" + row["url"])
        assert http(url + "/job/nobody/99.cafe")[0] == 404
        assert http(url + "/api/job/nobody/99.cafe")[0] == 404
        assert http(url + "/nosuchpage")[0] == 404
    assert detail["job"]["jobid"] == jid and len(detail["processes"]) == 2
    assert all(p["state"] == "DONE" and p["outcome"] == "N" for p in detail["processes"])
    assert any("Message: hello page" in line for line in detail["processes"][1]["log"])


def test_job_page_follows_a_rerun_and_shows_the_earlier_attempts(session: Session, env: Env) -> None:
    jid = session.dpu.run("Null", n=4, ff="1,3", return_jobid=True)
    assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].counts.letters == (2, 2, 0, 0, 0)
    with serving() as (url, _):
        row = next(j for j in get_json(url + "/api/queue")["jobs"] if j["jobid"] == jid)
        first = get_json(url + "/api" + row["url"])   # the first attempt, settled on the page
        # Straight after wait(): the first runner may still be saving its states; the rerun's
        # submit waits for it (local_kill.wait_for_runner), or its file would end the rerun E.
        session.dpu.rerun(jid)
        assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].counts.letters == (4, 0, 0, 0, 0)

        def rerun_shown() -> bool:
            detail = get_json(url + "/api" + row["url"])
            return detail["job"]["status"] == "FINISHED" and \
                [p["outcome"] for p in detail["processes"]] == ["N"] * 4
        wait_until(rerun_shown)
        detail = get_json(url + "/api" + row["url"])
        html = http(url + row["url"])[2].decode()
        queue = next(j for j in get_json(url + "/api/queue")["jobs"] if j["jobid"] == jid)
    assert [p["outcome"] for p in first["processes"]] == ["N", "E", "N", "E"] and first["earlier"] == []
    assert [p["attempt"] for p in detail["processes"]] == [1, 2, 1, 2]
    assert [(a["index"], a["attempt"], a["outcome"]) for a in detail["earlier"]] == [(1, 1, "E"), (3, 1, "E")]
    assert all(a["reason"] for a in detail["earlier"]) and str(env.work) not in json.dumps(detail["earlier"])
    assert queue["counters"]["N"] == 4 and queue["counters"]["E"] == 0
    assert "<h2>Earlier attempts</h2>" in html and "<th>Attempt</th>" in html


def test_earlier_attempts_of_another_users_card_are_escaped_and_masked(session: Session, env: Env) -> None:
    """A card read for the first time after its job was rerun: attempts and history from the card,
    its reasons (another user's text) escaped and without their paths."""
    jobdir = other_users_job(env)
    card = env.work / "testlocal" / "index" / "nobody" / "7.feedbeef.json"
    data = json.loads(card.read_text())
    card.write_text(json.dumps({**data, "earlier": [[0, 1, "E", f"{HOSTILE} in {jobdir}/p/0/log"]]}))
    with serving() as (url, _):
        wait_until(lambda: listed(url, 7))
        detail = get_json(url + "/api/job/nobody/7.feedbeef")
        html = http(url + "/job/nobody/7.feedbeef")[2].decode()
    assert [(p["attempt"], p["outcome"]) for p in detail["processes"]] == [(2, "N")]
    assert detail["earlier"] == [{"index": 0, "attempt": 1, "outcome": "E",
                                  "reason": f"{HOSTILE} in $JOBDIR/p/0/log"}]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and "<img" not in html
    assert str(env.root) not in html and "$JOBDIR/p/0/log" in html


def test_job_page_shows_the_usage_the_workers_measured(session: Session) -> None:
    jid = finished(session, "Null", n=2, mb=30)
    with serving() as (url, _):
        row = get_json(url + "/api/queue")["jobs"][0]
        detail = get_json(url + "/api" + row["url"])
        html = http(url + row["url"])[2].decode()
    usage = detail["usage"]
    assert detail["job"]["jobid"] == jid and (usage["measured"], usage["sources"]) == (2, {"worker": 2})
    assert 30 <= usage["memory"]["max_mb"] < 200 and usage["time"]["max_used"] is not None
    assert [r["process"] for r in usage["worst"]["memory"]] != [] and "rows" not in usage
    assert re.search(r"<th>Peak memory</th><td>max \d+ MB", html) and "2 from worker" in html


def test_the_page_is_read_only_and_answers_only_its_own_host_names(session: Session) -> None:
    with serving() as (url, _):
        for method in ("PUT", "DELETE", "PATCH"):
            assert http(url + "/api/queue", b"{}", method)[0] == 405
        assert http(url + "/", b"{}", "POST")[0] == 405
        assert http(url + "/api/queue", headers={"Host": "evil.example:80"})[0] == 421
        assert http(url.replace("127.0.0.1", "localhost") + "/api/queue")[0] == 200


# -- the submission API -------------------------------------------------------------------
def post(url: str, body: Any, token: Optional[str]) -> Tuple[int, Dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, raw = http(url + "/api/run", data, "POST", headers)
    return status, json.loads(raw)


@pytest.fixture
def token() -> str:
    store = open_store()
    made, _ = tokens.create(store, pwd.getpwuid(os.getuid()).pw_name, "tests")
    store.close()
    return made


RUN = {"sequence": "Null", "options": {"m": "via web", "n": 2}, "dpu_options": {"dpu_mem": 300}}


def test_api_without_a_valid_token_is_401_and_submits_nothing(session: Session, token: str) -> None:
    with serving() as (url, _):
        for bad in (None, "", token[:-2] + "xx", "dpu_00000000_" + "a" * 43):
            status, answer = post(url, RUN, bad)
            assert status == 401 and "dpu token create" in answer["error"]
        status, _, _ = http(url + "/api/run", json.dumps(RUN).encode(), "POST",
                            {"Authorization": f"Basic {token}"})
        assert status == 401
    assert session.dpu.get_jobids() == []


def test_api_submits_as_the_user_and_the_job_shows_at_their_prompt(session: Session, token: str) -> None:
    with serving() as (url, _):
        status, answer = post(url, RUN, token)
        assert status == 201, answer
        assert (answer["dpu"], answer["processes"], answer["sequence"]) == ("testlocal", 2, "Null")
        assert session.dpu.get_jobids() == [answer["jobid"]]
        view = session.dpu.wait(answer["jobid"], timeout=60, interval=0.05)[0]
        assert view.counts.letters == (2, 0, 0, 0, 0)
        assert view.job.options["message"] == "via web" and view.job.dpu_options["dpu_mem"] == 300
        wait_until(lambda: listed(url, answer["jobid"]))   # the refresh after the submit
        assert [j["jobid"] for j in get_json(url + "/api/queue")["jobs"]] == [answer["jobid"]]
        assert get_json(url + "/api" + answer["url"])["job"]["jobid"] == answer["jobid"]


@pytest.mark.parametrize("sequence, options", [("Nul", {}), ("Null", {"n": "many"}),
                                               ("Null", {"nosuch": 1}), ("ReadNoise", {"i": "XXX"})])
def test_api_validation_errors_are_400_with_the_prompts_message(
        session: Session, token: str, sequence: str, options: Dict[str, Any]) -> None:
    with pytest.raises(Exception) as prompt:
        session.dpu.run(sequence, **options)
    with serving() as (url, _):
        status, answer = post(url, {"sequence": sequence, "options": options}, token)
    assert status == 400 and answer["error"] == str(prompt.value)
    assert answer["type"] == type(prompt.value).__name__
    assert isinstance(prompt.value, OptionError) or answer["type"] == "SequenceError"


@pytest.mark.parametrize("body, message", [
    (b"not json", "the body is not JSON"),
    ([1, 2], "must be a JSON object"),
    ({"sequence": "Null", "extra": 1}, "unknown field(s) extra"),
    ({"options": {}}, "'sequence' is required"),
    ({"sequence": "Null", "options": [1]}, "'options' must be a JSON object"),
    ({"sequence": "Null", "dpu_options": {"dpu_cpus": 2}}, "unknown dpu option(s) dpu_cpus"),
    ({"sequence": "Null", "dpu": "elsewhere"}, "this server submits to DPU 'testlocal'"),
    ({"sequence": "Null", "dpu_options": {"dpu_time": -1}}, "dpu_time must be a positive number"),
    # wrong types and undecodable bytes: a 400 saying what is wrong, never a 500 (more in
    # test_api_bodies_outside_the_model_are_400)
    ({"sequence": "Null", "options": {"m": {"deep": [1, {"x": None}]}, "n": [2]}}, ""),
    ({"sequence": "Null", "options": {"m": "x", "n": True}}, ""),
    (b'{"sequence": "\\ud800", "options": {}}', ""),
    (b'\xff\xfe{}', "the body is not JSON"),
])
def test_api_malformed_requests_are_400(session: Session, token: str, body: Any, message: str) -> None:
    with serving() as (url, _):
        status, answer = post(url, body, token)
    assert status == 400 and message in answer["error"]
    assert session.dpu.get_jobids() == []


def test_api_refuses_a_huge_body(session: Session, token: str) -> None:
    with serving() as (url, _):
        status, _answer = post(url, b"x" * (2 << 20), token)
    assert status == 413


# -- the shell side -----------------------------------------------------------------------
def test_dpu_queue_prints_the_table_with_control_characters_defused(session: Session, env: Env,
                                                                    capsys: Capture) -> None:
    jid = finished(session, "Null", m="\x1b[2Jcleared?")
    other_users_job(env)
    assert cli.main(["queue", "--dpu", "testlocal"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["JOBID", "USER", "SEQUENCE", "STATUS", "N/E/A/S/U", "SUBMITTED",
                                "RUNNING", "OPTIONS"]
    assert re.search(rf"^{jid}\s+\S+\s+Null\s+FINISHED\s+1/0/0/0/0\s", out, re.M)
    assert re.search(r"^7\s+nobody\s+Bias\s+FINISHED\s+1/0/0/0/0\s.*\s00:01:00\s+instrument=WFI", out, re.M)
    assert "\x1b" not in out and "\\x1b[2Jcleared?" in out
    assert cli.main(["queue", "--dpu", "testlocal", "--user", "nobody", "--json"]) == 0
    assert [j["jobid"] for j in json.loads(capsys.readouterr().out)] == [7]


def test_dpu_web_serves_until_sigterm(env: Env, session: Session) -> None:
    jid = finished(session, "Null")
    proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "testlocal",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=env.cwd)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"Serving the queue of DPU testlocal on (http://127\.0\.0\.1:\d+/) ", line)
        assert match, line
        wait_until(lambda: listed(match.group(1), jid))    # the first refresh, in the background
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_dpu_web_on_a_taken_port_is_a_clear_error(session: Session, capsys: Capture) -> None:
    with serving() as (url, _):
        port = url.rsplit(":", 1)[1]
        assert cli.main(["web", "--dpu", "testlocal", "--port", port]) == 2
    assert "pick another with --port" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_stray_index(env: Env) -> Iterator[None]:
    yield
    shutil.rmtree(env.work, ignore_errors=True)   # chowned folders: remove them as root now


@pytest.mark.parametrize("body, message", [
    (b'{"sequence": "Null", "options": {"s": NaN}}', "NaN is not a number JSON allows"),
    (b'{"sequence": "Null", "options": {"s": Infinity}}', "Infinity is not a number JSON allows"),
    (b'{"sequence": "Null", "options": {"s": 1e400}}', "options.s: must be a finite number, got inf"),
    (b'{"sequence": "Null", "options": {"m": "\\ud800"}}', "options.m: '\\ud800' holds a lone surrogate"),
    (b'{"sequence": "Null\\ud800"}', "sequence: 'Null\\ud800' holds a lone surrogate"),
    (b'{"sequence": "Null", "options": {"m": "a\\u0000b"}}', "holds a NUL character"),
    (b'{"sequence": "Null", "options": {"p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
     "nested too deeply"),
    (b'{"sequence": "Null", "options": {"p": [[[[[1]]]]]}}', "nested more than 4 deep"),
    (b'{"sequence": "Null", "dpu_options": {"send_code": "no"}}', "send_code: must be true or false"),
    (b'{"sequence": "Null", "dpu_options": {"dpu_mem": 1e18}}', "dpu_mem must be a positive number of MB"),
    (b'{"sequence": "Null", "dpu_options": {"dpu_time": 1e308}}', "dpu_time must be a positive number"),
])
def test_api_bodies_outside_the_model_are_400(session: Session, token: str, body: bytes,
                                              message: str) -> None:
    with serving() as (url, _):
        status, answer = post(url, body, token)
    assert status == 400 and message in answer["error"], answer
    assert session.dpu.get_jobids() == []


def test_api_parse_uses_the_run_model_and_keeps_good_values() -> None:
    sequence, options, asked = parse(json.dumps({"sequence": "Null", "options": {"m": "x\ny", "s": 1},
                                                 "dpu_options": {"dpu_mem": 64, "send_code": True}}
                                                ).encode(), "testlocal")
    assert (sequence, options, asked) == ("Null", {"m": "x\ny", "s": 1}, {"dpu_mem": 64, "send_code": True})


@pytest.mark.parametrize("sequence", ["Null>" * 40, "Null> " * 40 + "<", "Bias>" + "x " * 40 + ">"])
def test_a_sequence_that_almost_matches_is_refused_at_once(sequence: str) -> None:
    """The sequence pattern backtracked exponentially on a near miss ('Null>' x 14: minutes),
    and the regex holds the GIL: one API body froze the whole page. The child is a safety net
    (killed by its timeout), not a timing check."""
    code = ("import json, sys\nfrom dpu_slurm.web.api import BadRequest, parse\n"
            "try:\n    parse(json.dumps({'sequence': sys.argv[1], 'options': {}}).encode(), 'local')\n"
            "except BadRequest as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, sequence], capture_output=True, text=True,
                          timeout=60)
    assert "a sequence identifier like" in proc.stdout, proc.stderr
    assert parse(json.dumps({"sequence": " Bias > HotPixels ", "options": {}}).encode(), "local")[0]
