"""`dpu web` under abuse: bad submits and cards do not take the page down, connection limits,
the request log, the Host allow-list off loopback (in a private network namespace), IPv6."""
from __future__ import annotations

import json
import logging
import os
import pwd
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from dpu_slurm.schedulers.local import LocalScheduler
from dpu_slurm.session import store_id
from dpu_slurm.web import app as web_app
from tests.conftest import REPO, Env, Session, wait_until
from tests.test_web import finished, get_json, http, listed, other_users_job, post, serving, token

__all__ = ["token"]   # the fixture, imported for the tests below
CHILD_ENV = dict(PYTHONPATH=str(REPO))
ME = pwd.getpwuid(os.getuid()).pw_name


# -- helpers --------------------------------------------------------------------------------
@contextmanager
def web_process(env: Env, *args: str) -> Iterator[Tuple[int, subprocess.Popen, List[str]]]:
    """`dpu web` as its own process on a free loopback port: (port, process, its stderr lines
    once stopped). Stopped with SIGTERM at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "testlocal",
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **CHILD_ENV), cwd=env.cwd)
    log: List[str] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        yield int(match.group(1)), proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        log.extend(err.splitlines())


def exchange(port: int, data: bytes, timeout: float = 30.0) -> Tuple[int, bytes, bool]:
    """Send raw bytes, read until the server closes: (status, everything read, closed by it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got, closed = b"", False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    return (int(match.group(1)) if match else 0), got, closed


def head(port: int, extra: bytes = b"") -> bytes:
    return b"Host: 127.0.0.1:%d\r\n%s" % (port, extra)


# -- item 3: one bad submit or card must not take the page down for everyone ----------------------
def test_a_lone_surrogate_submitted_does_not_take_the_page_down(session: Session, token: str) -> None:
    ok = finished(session, "Null", m="fine")
    raw = b'{"sequence": "Null", "options": {"m": "\\ud800 lone"}}'   # valid JSON text
    with serving() as (url, _):
        status, answer = post(url, raw, token)
        assert status in (201, 400), answer     # refused by validation, or taken and shown
        if status == 201:
            wait_until(lambda: listed(url, answer["jobid"]))
        oldest = get_json(url + "/api/queue")["jobs"][-1]["key"]
        for path in ("/", "/api/queue", "/?user=nobody", f"/job/{oldest}", f"/api/job/{oldest}"):
            code, _, body = http(url + path)
            assert code == 200, (path, body[:300])
            body.decode("utf-8")                # strictly valid UTF-8
        data = get_json(url + "/api/queue")
        assert ok in [j["jobid"] for j in data["jobs"]]
        if status == 201:
            assert http(url + answer["url"])[0] == 200


def card_of(env: Env, job_id: int, **fields: Any) -> None:
    """Rewrite another user's card (other_users_job) with some fields replaced."""
    path = env.work / "testlocal" / "index" / "nobody" / f"{job_id}.feedbeef.json"
    raw = path.read_text()
    data = json.loads(raw)
    data.update(fields)
    text = json.dumps(data)
    uid = path.stat().st_uid
    path.write_text(text.replace('"SURROGATE"', '"\\udcff"'))   # JSON may carry a lone surrogate
    os.chown(path, uid, -1)


def test_broken_cards_are_one_row_each_never_a_500(session: Session, env: Env) -> None:
    mine = finished(session, "Null")
    other_users_job(env, job_id=7)
    other_users_job(env, job_id=8)
    other_users_job(env, job_id=9)
    card_of(env, 8, options="boom")
    card_of(env, 9, options={"m": "SURROGATE", "x": [[[[["deep"]]]]]}, sequence="SURROGATE")
    with serving() as (url, _):
        for path in ("/", "/api/queue"):
            code, _, body = http(url + path)
            assert code == 200, body[:300]
            body.decode("utf-8")
        data = get_json(url + "/api/queue")
        shown = {j["key"] for j in data["jobs"]}
        assert {"nobody/7.feedbeef", f"{ME}/{mine}.{store_id(session.dpu._store)}"} <= shown
        # each broken card is shown as well as it can be, or counted in a warning naming one
        warned = " ".join(data["warnings"])
        missing = [k for k in ("nobody/8.feedbeef", "nobody/9.feedbeef") if k not in shown]
        counts = re.findall(r"(\d+) job (?:card)?\(s\) (?:ignored|cannot be shown)", warned)
        counted = sum(int(n) for n in counts)
        assert counted >= len(missing) and (not missing or any(k.split("/")[1] in warned for k in missing))
        for key in shown:                       # every job page shown answers
            assert http(url + "/job/" + key)[0] == 200
        assert http(url + "/job/nobody/8.feedbeef")[0] in (200, 404)


def test_a_job_page_that_fails_is_an_error_for_that_job_only(session: Session,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = finished(session, "Null"), finished(session, "Null")
    store = store_id(session.dpu._store)
    with serving() as (url, server):
        real = server.app.mirror.job

        def job(key: str) -> Any:
            if key == f"{ME}/{bad}.{store}":
                raise RuntimeError("a log that cannot be read")
            return real(key)

        monkeypatch.setattr(server.app.mirror, "job", job)
        assert http(f"{url}/job/{ME}/{bad}.{store}")[0] == 500
        status, _, body = http(f"{url}/api/job/{ME}/{bad}.{store}")
        assert status == 500 and json.loads(body)["error"].startswith("this job cannot be shown")
        assert http(f"{url}/job/{ME}/{good}.{store}")[0] == 200
        assert {j["jobid"] for j in get_json(url + "/api/queue")["jobs"]} == {good, bad}


def test_an_unexpected_error_is_a_500_for_that_request_only(session: Session,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with serving() as (url, server):
        monkeypatch.setattr(server.app, "queue", lambda *a: 1 / 0)
        status, headers, body = http(url + "/api/queue")
        assert (status, json.loads(body)) == (500, {"error": "internal error; see the dpu web log"})
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert http(url + "/")[0] == 500 and http(url + "/favicon.ico")[0] == 204
        monkeypatch.undo()
        assert http(url + "/")[0] == 200


def test_a_failing_refresh_keeps_the_last_snapshot_and_says_so(session: Session,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    jid = finished(session, "Null")
    with serving() as (url, server):
        assert listed(url, jid)

        def broken(force: bool = False) -> None:
            raise RuntimeError("the index is on fire")

        monkeypatch.setattr(server.app.mirror, "refresh", broken)
        wait_until(lambda: any("on fire" in w for w in get_json(url + "/api/queue")["warnings"]))
        count = server.app.refresher.refreshes
        wait_until(lambda: server.app.refresher.refreshes >= count + 3)
        data = get_json(url + "/api/queue")
        assert [j["jobid"] for j in data["jobs"]] == [jid] and http(url + "/")[0] == 200
        assert data["warnings"][0].startswith("refreshing failed (RuntimeError: the index is on fire); "
                                              "showing the states of ")
        assert sum("refreshing the queue failed" in r.getMessage() for r in caplog.records) == 1
        monkeypatch.undo()
        wait_until(lambda: get_json(url + "/api/queue")["warnings"] == [])


# -- item 5: the server's limits ------------------------------------------------------------------
def test_a_get_is_answered_while_twenty_slow_submits_run(session: Session, token: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    jid = finished(session, "Null")
    gate, entered = threading.Event(), []
    real = LocalScheduler.submit

    def slow(self: LocalScheduler, req: Any) -> Any:
        entered.append(req.job_id)
        assert gate.wait(120), "the test never opened the gate"
        return real(self, req)

    monkeypatch.setattr(LocalScheduler, "submit", slow)
    answers: List[Tuple[int, Dict[str, Any]]] = []
    with serving() as (url, _):
        posts = [threading.Thread(target=lambda: answers.append(post(url, {"sequence": "Null"}, token)))
                 for _ in range(20)]
        for thread in posts:
            thread.start()
        try:
            wait_until(lambda: len(entered) >= 1)   # a submit is inside the scheduler, blocked
            page = http(url + "/")
            queue = get_json(url + "/api/queue")
            job = http(url + "/job/" + queue["jobs"][0]["key"])
            refused = post(url, {"sequence": "Null"}, "dpu_00000000_" + "a" * 43)
            # all of this was answered while every submit was still waiting
            assert not gate.is_set() and all(t.is_alive() for t in posts) and answers == []
        finally:
            gate.set()
            for thread in posts:
                thread.join(120)
        assert page[0] == 200 and job[0] == 200 and refused[0] == 401
        assert [j["jobid"] for j in queue["jobs"]] == [jid]
        assert sorted(code for code, _ in answers) == [201] * 20
        wait_until(lambda: all(listed(url, a["jobid"]) for _, a in answers))


def test_requests_are_served_from_the_snapshot_while_the_scheduler_hangs(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    done = finished(session, "Null")
    slow = session.dpu.run("Null", s=30, return_jobid=True)
    hang, inside, release = threading.Event(), threading.Event(), threading.Event()
    real = LocalScheduler.poll_request

    def poll_request(self: LocalScheduler, jobs: Any) -> Any:
        if hang.is_set() and not release.is_set():
            inside.set()
            release.wait(120)
        return real(self, jobs)

    monkeypatch.setattr(web_app, "JOB_TIMEOUT", 0.5)
    monkeypatch.setattr(LocalScheduler, "poll_request", poll_request)
    with serving() as (url, server):
        wait_until(lambda: listed(url, slow))
        key = f"{ME}/{done}.{store_id(session.dpu._store)}"
        hang.set()
        try:
            assert inside.wait(60)          # the background refresh is stuck in the scheduler
            before = server.app.refresher.refreshes
            data = get_json(url + "/api/queue")
            code, _, body = http(url + "/")
            job = http(url + "/api/job/" + key)
            assert server.app.refresher.refreshes == before and inside.is_set()
        finally:
            release.set()
        assert {j["jobid"] for j in data["jobs"]} == {done, slow}
        assert isinstance(data["updated"], float) and data["age"] >= 0
        assert code == 200 and re.search(rb'id="age">\d+ s ago<', body)
        # a job page reads files under the refresh's lock: it answers "try again", not hangs
        assert job[0] == 503 and "try again" in json.loads(job[2])["error"]
    session.dpu.cancel_job(slow, force=True)


def test_idle_connections_are_closed_and_the_page_answers_meanwhile(session: Session, env: Env) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with web_process(env, "--idle-timeout", "2") as (port, _proc, log):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(500)]
        idle[0].sendall(b"GET / HTTP/1.1\r\n")              # a head that never ends
        try:
            code, _, _ = http(f"http://127.0.0.1:{port}/")
            assert code == 200
            open_ = set(idle)
            with selectors.DefaultSelector() as sel:
                for sock in idle:
                    sel.register(sock, selectors.EVENT_READ)
                deadline = time.monotonic() + 60          # a bound, not a measurement
                while open_ and time.monotonic() < deadline:
                    for key, _ in sel.select(timeout=1):
                        if key.fileobj.recv(1024) == b"":    # type: ignore[union-attr]
                            sel.unregister(key.fileobj)
                            open_.discard(key.fileobj)      # type: ignore[arg-type]
            assert not open_, f"{len(open_)} idle connections still open"
            assert http(f"http://127.0.0.1:{port}/api/queue")[0] == 200
        finally:
            for sock in idle:
                sock.close()
    assert not any("Traceback" in line for line in log)


def test_listen_backlog_is_large(session: Session, env: Env) -> None:
    with serving() as (url, _):
        port = url.rsplit(":", 1)[1]
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                             check=True).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(out[2]) == min(2048, somaxconn), out   # Send-Q of a listening socket: its backlog


def test_a_lying_content_length_is_cut_off_without_a_traceback(session: Session, env: Env) -> None:
    with web_process(env, "--idle-timeout", "1") as (port, _proc, log):
        status, got, closed = exchange(port, b"POST /api/run HTTP/1.1\r\n" + head(port) +
                                       b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"seq")
        assert (status, closed) == (408, True), got
        assert http(f"http://127.0.0.1:{port}/api/queue")[0] == 200
    assert not any("Traceback" in line for line in log), log


def test_body_and_header_limits(session: Session) -> None:
    with serving() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        post_ = b"POST /api/run HTTP/1.1\r\n" + head(port)
        big = b"%x\r\n%s\r\n" % (1 << 19, b"x" * (1 << 19))
        chunked = exchange(port, post_ + b"Transfer-Encoding: chunked\r\n\r\n" + big * 3 + b"0\r\n\r\n")
        assert chunked[0] == 413 and chunked[2], chunked[1][:200]
        assert exchange(port, post_ + b"Connection: close\r\n\r\n")[0] == 411
        huge_header = b"X-Big: " + b"a" * 40000 + b"\r\n"
        assert exchange(port, b"GET / HTTP/1.1\r\n" + head(port, huge_header) + b"\r\n")[0] == 431
        # a head still growing past the limit, never finished
        status, got, closed = exchange(port, b"GET / HTTP/1.1\r\n" + head(port, huge_header))
        assert (status, closed) == (431, True) and b"nosniff" in got


def test_the_request_log_escapes_control_characters(session: Session,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        exchange(port, b"GET /%1b[2J%0d%0aFAKE%20200%20line?q=%1b] HTTP/1.1\r\n" + head(port) +
                 b"Connection: close\r\n\r\n")
        exchange(port, b"GET /\x1b[2Jraw\x07 HTTP/1.1\r\n" + head(port) + b"Connection: close\r\n\r\n")
        exchange(port, b"GET /\r\x1b[31mcr HTTP/1.1\r\n" + head(port) + b"Connection: close\r\n\r\n")
    messages = [r.getMessage() for r in caplog.records]
    assert any("\\x1b[2J\\r\\nFAKE 200 line" in m for m in messages), messages
    for message in messages:
        assert not set(message) & {"\x1b", "\r", "\n", "\x07"}, repr(message)


# -- Host allow-list off loopback, IPv6 (in a private network namespace: nothing leaves it) ---------
NETNS_DRIVER = textwrap.dedent('''
    import http.client, json, re, subprocess, sys
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"], check=True)
    def start(*args):
        proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "testlocal",
                                 "--port", "0", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        return proc, proc.stdout.readline()
    def get(address, port, host):
        conn = http.client.HTTPConnection(address, port, timeout=30)
        conn.putrequest("GET", "/api/queue", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        return conn.getresponse().status
    out = {}
    proc, line = start("--host", "10.99.0.1", "--allowed-host", "dpu.example",
                       "--allowed-host", "proxy.example:8443")
    port = int(re.search(r":(\\d+)/", line).group(1))
    out["line"] = line
    out["hosts"] = {h: get("10.99.0.1", port, h) for h in (
        "evil.example", "evil.example:%d" % port, "dpu.example", "DPU.example:%d" % port,
        "proxy.example:8443", "proxy.example:9", "10.99.0.1:%d" % port, "127.0.0.1:%d" % port, "")}
    proc.terminate(); out["err"] = proc.communicate(30)[1]
    proc, line = start("--host", "::", "--allowed-host", "[::1]")
    port = int(re.search(r":(\\d+)/", line).group(1))
    out["v6line"] = line
    out["v6"] = get("::1", port, "[::1]:%d" % port)
    proc.terminate(); proc.communicate(30)
    print(json.dumps(out))
''')


def test_off_loopback_only_allowed_hosts_are_answered(session: Session, env: Env) -> None:
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", NETNS_DRIVER], capture_output=True,
                         text=True, timeout=180, cwd=env.cwd, env=dict(os.environ, **CHILD_ENV))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    port = re.search(r":(\d+)/", out["line"]).group(1)   # type: ignore[union-attr]
    assert out["line"].startswith(f"Serving the queue of DPU testlocal on http://10.99.0.1:{port}/ ")
    assert out["hosts"] == {"evil.example": 421, f"evil.example:{port}": 421, "dpu.example": 200,
                            f"DPU.example:{port}": 200, "proxy.example:8443": 200,
                            "proxy.example:9": 421, f"10.99.0.1:{port}": 200,
                            f"127.0.0.1:{port}": 421, "": 421}
    assert "put it behind a TLS proxy" in out["err"]
    assert re.match(r"Serving the queue of DPU testlocal on http://\[::\]:\d+/ ", out["v6line"]), out

    assert out["v6"] == 200


def test_ipv6_loopback_start_line(session: Session, env: Env) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "testlocal",
                             "--host", "::1", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **CHILD_ENV),
                            cwd=env.cwd)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"Serving the queue of DPU testlocal on (http://\[::1\]:\d+/) ", line)
        assert match, line
        assert get_json(match.group(1) + "api/queue")["dpu"] == "testlocal"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_dpu_web_without_the_web_extra_says_how_to_install_it(session: Session, env: Env) -> None:
    fake = env.root / "no-starlette" / "starlette"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no starlette here', name='starlette')\n")
    res = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "testlocal",
                          "--port", "0"], capture_output=True, text=True, timeout=60, cwd=env.cwd,
                         env=dict(os.environ, PYTHONPATH=f"{fake.parent}{os.pathsep}{REPO}"))
    assert res.returncode == 2
    assert "pip install 'dpu_slurm[web]'" in res.stderr and "Traceback" not in res.stderr
