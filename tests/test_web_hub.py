"""`dpu web` with several DPUs: the "Cluster Queues" overview, /api/dpus, /dpu/NAME/ pages, and
a DPU that hangs or cannot be reached making only its own row stale (order, never wall time)."""
from __future__ import annotations

import json
import socket
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest

from dpu_slurm.config import get_dpu
from dpu_slurm.session import open_store
from dpu_slurm.web.server import QueueServer, make_server
from tests.conftest import Env, Session, wait_until
from tests.test_web import HOSTILE, finished, get_json, http


@contextmanager
def hub(*names: str, **options: Any) -> Iterator[Tuple[str, QueueServer]]:
    """A live server of these DPUs; yielded once it answers (not waiting for any DPU's poll)."""
    store = open_store()
    server = make_server([get_dpu(n) for n in names], store, port=0, refresh=1.0,
                         **{"poll_floor": 0.1, **options})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.uvicorn.started)
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        thread.join(20)
        server.server_close()
        store.close()


def rows(url: str) -> Dict[str, Dict[str, Any]]:
    return {d["dpu"]: d for d in get_json(url + "/api/dpus")["dpus"]}


def polled(server: QueueServer, name: str) -> int:
    return server.hub.apps[name].refresher.refreshes


def test_the_overview_lists_every_dpu_with_its_counters_and_links_to_its_page(
        make_session: Callable[..., Session]) -> None:
    other = make_session("other", description=HOSTILE)
    s = make_session()
    ok = finished(s, "Null", n=3)
    bad = finished(other, "Null>Null", x=True)
    with hub("testlocal", "other") as (url, server):
        wait_until(lambda: polled(server, "testlocal") > 0 and polled(server, "other") > 0)
        got = rows(url)
        assert list(got) == ["other", "testlocal"]
        mine = got["testlocal"]
        assert mine["counters"] == {"N": 3, "E": 0, "A": 0, "S": 0, "U": 0}
        assert (mine["jobs"], mine["statuses"]["FINISHED"], mine["queued"]) == (1, 1, 0)
        assert got["other"]["counters"] == {"N": 0, "E": 1, "A": 0, "S": 1, "U": 0}
        assert mine["reachable"] is True and mine["health"] == "ok" and mine["age"] is not None
        assert mine["url"] == "/dpu/testlocal/"
        # / is the overview: both DPUs, each linking to its own page; text escaped
        code, headers, body = http(url + "/")
        page = body.decode()
        assert code == 200 and 'href="/dpu/testlocal/"' in page and 'href="/dpu/other/"' in page
        assert "<script>window.__pwned" not in page and "&lt;script&gt;" in page
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert http(url + "/dpus")[0] == 200
        # each DPU's queue under /dpu/NAME/, its job links under it too
        queue = get_json(url + "/dpu/testlocal/api/queue")
        assert [j["jobid"] for j in queue["jobs"]] == [ok]
        link = queue["jobs"][0]["url"]
        assert link.startswith("/dpu/testlocal/job/")
        assert http(url + link)[0] == 200
        assert get_json(url + "/dpu/testlocal/api" + link[len("/dpu/testlocal"):])["job"]["jobid"] == ok
        assert [j["jobid"] for j in get_json(url + "/dpu/other/api/queue")["jobs"]] == [bad]
        assert 'data-base="/dpu/other"' in http(url + "/dpu/other/")[2].decode()
        # the unprefixed single-DPU paths say where to go; unknown DPUs are 404
        code, _, body = http(url + "/api/queue")
        assert code == 404 and "/dpu/NAME/" in json.loads(body)["error"]
        code, _, body = http(url + "/dpu/nope/api/queue")
        assert code == 404 and "other, testlocal" in json.loads(body)["error"]
        assert http(url + "/dpu/nope/")[0] == 404
        # the Host allow-list guards the overview as every other page
        assert http(url + "/api/dpus", headers={"Host": "evil.example:80"})[0] == 421


def test_with_one_dpu_the_old_paths_stay_and_the_overview_is_at_dpus(session: Session) -> None:
    jid = finished(session, "Null")
    with hub("testlocal") as (url, server):
        wait_until(lambda: polled(server, "testlocal") > 0)
        assert [j["jobid"] for j in get_json(url + "/api/queue")["jobs"]] == [jid]
        assert get_json(url + "/api/queue")["jobs"][0]["url"].startswith("/job/")
        assert 'id="queue"' in http(url + "/")[2].decode()           # / is still the queue
        assert list(rows(url)) == ["testlocal"] and rows(url)["testlocal"]["url"] == "/"
        assert [j["jobid"] for j in get_json(url + "/dpu/testlocal/api/queue")["jobs"]] == [jid]


def fake_slurm(folder: Path, flag: Path) -> Path:
    """A bin_dir whose sbatch accepts and whose squeue hangs until `flag` exists (at most 60 s)."""
    folder.mkdir()
    scripts = {"sbatch": "#!/bin/sh\necho 4242\n",
               "squeue": f"#!/bin/sh\nfor i in $(seq 600); do [ -e '{flag}' ] && exit 0; sleep 0.1; done\n",
               "sacct": "#!/bin/sh\nexit 0\n"}
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    return folder


def test_a_dpu_whose_scheduler_hangs_makes_only_its_own_row_stale(
        make_session: Callable[..., Session], env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = env.root / "release"
    bin_dir = fake_slurm(env.root / "bin", flag)
    hang = make_session("hang", scheduler="slurm", bin_dir=str(bin_dir), min_time=60,
                        poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    hang.dpu.run("Null", return_jobid=True)                # job 'queued' on the hanging DPU
    s = make_session()
    jid = finished(s, "Null")
    monkeypatch.setattr("dpu_slurm.web.hub.HANGING", 0.0)  # any poll on its way counts as stale
    try:
        with hub("hang", "testlocal") as (url, server):
            # the local DPU is polled again and again while the hanging one's first poll never ends
            wait_until(lambda: polled(server, "testlocal") >= 3)
            assert polled(server, "hang") == 0
            assert [j["jobid"] for j in get_json(url + "/dpu/testlocal/api/queue")["jobs"]] == [jid]
            got = rows(url)
            assert got["testlocal"]["health"] == "ok" and got["testlocal"]["stale"] is False
            assert got["hang"]["stale"] is True and got["hang"]["reachable"] is None
            assert got["hang"]["health"].startswith("no answer for") and got["hang"]["age"] is None
            assert 'class="stale"' in http(url + "/")[2].decode()
            flag.touch()                                    # the scheduler answers: the row recovers
            wait_until(lambda: polled(server, "hang") > 0 and rows(url)["hang"]["reachable"] is True)
    finally:
        flag.touch()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_ssh_dpu_shows_as_such_and_the_local_page_answers(
        make_session: Callable[..., Session], env: Env) -> None:
    known = env.root / "known_hosts"
    known.write_text("")
    env.write_dpu("far", scheduler="slurm", host={"hostname": "127.0.0.1", "port": closed_port(),
                                                  "user": "dpuuser", "known_hosts": str(known),
                                                  "connect_timeout": 2})
    s = make_session()
    jid = finished(s, "Null")
    with hub("far", "testlocal") as (url, server):
        wait_until(lambda: polled(server, "testlocal") > 0)
        assert [j["jobid"] for j in get_json(url + "/dpu/testlocal/api/queue")["jobs"]] == [jid]
        wait_until(lambda: polled(server, "far") > 0, timeout=60)
        got = rows(url)
        assert got["far"]["reachable"] is False
        assert got["far"]["health"].startswith("unreachable (never reached): DPU 'far' is unreachable")
        assert got["testlocal"]["reachable"] is True
        assert server.hub.apps["far"].refresher.delay() > server.hub.apps["testlocal"].refresher.delay()
        page = http(url + "/")[2].decode()
        assert 'class="unreachable"' in page and 'data-dpu="testlocal" class="ok"' in page


def test_dpu_web_without_dpu_serves_every_configured_dpu(env: Env) -> None:
    env.write_dpu()
    env.write_dpu("other")
    from dpu_slurm.web.commands import served
    assert [d.name for d in served(None)] == ["local", "other", "testlocal"]
    assert [d.name for d in served(["testlocal", "other", "testlocal"])] == ["testlocal", "other"]
