"""The shared job index and the queue page against a real second user (runuser, as root).

dpualice is an honest user, dpumallory a hostile one (harness/users-up.sh makes them). What
they do runs as them; the page runs as root in this process: root passes every permission
check, so whatever a root-run page refuses, a page run by any user refuses too. Each check
runs on this machine's transport and on the SSH transport's remote helper (run here, as root).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import yaml

from dpu_slurm.config import get_dpu
from dpu_slurm.errors import DPUError
from dpu_slurm.index import CARD_VERSION
from dpu_slurm.transport import Transport, remote_helper
from dpu_slurm.transport.local import LocalTransport
from dpu_slurm.transport.ssh import SSHTransport
from dpu_slurm.web.mirror import Mirror
from tests.conftest import REPO, Env, _stop_runners, harness

pytestmark = pytest.mark.users
ALICE, MALLORY = "dpualice", "dpumallory"
SECRET = "TOP-SECRET-9f2c7e"


@pytest.fixture(scope="session")
def shared() -> Iterator[Path]:
    """A folder every test user can read, holding a copy of dpu_slurm and its pure-Python
    dependencies (the worktree and venv may sit where they cannot look, e.g. under /root)."""
    harness("users-up.sh")
    base = Path(tempfile.mkdtemp(prefix="dpu-users-"))
    os.chmod(base, 0o755)
    code = base / "code"
    for name in ("dpu_slurm", "templates", "examples", "cluster_configs"):
        shutil.copytree(REPO / name, code / name, ignore=shutil.ignore_patterns("__pycache__"))
    for module in ("yaml", "jinja2", "markupsafe"):
        shutil.copytree(Path(__import__(module).__file__).parent, code / module,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for path in [code, *code.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def as_user(user: str, argv: List[str], shared: Path, check: bool = True,
            **env: str) -> subprocess.CompletedProcess:
    """Run argv as `user` (runuser) with a clean environment and dpu_slurm importable."""
    home = os.path.expanduser(f"~{user}")
    base = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(shared / "code"), "LANG": "C.UTF-8", **env}
    proc = subprocess.run(["runuser", "-u", user, "--", "env", "-i",
                           *[f"{k}={v}" for k, v in base.items()], *argv],
                          capture_output=True, text=True, timeout=120, cwd=home)
    if check:
        assert proc.returncode == 0, f"{argv} as {user}: {proc.stdout}\n{proc.stderr}"
    return proc


def py(user: str, source: str, shared: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    return as_user(user, ["/usr/bin/python3", "-c", textwrap.dedent(source)], shared, check, **env)


class HelperHere(SSHTransport):
    """The SSH transport with its remote helper run on this machine: the same requests and the
    same helper code an SSH DPU runs, without sshd (which would log in as one fixed user)."""

    def __init__(self) -> None:
        self.python = "/usr/bin/python3"
        self._home = None
        self._account = None
        self.round_trips = 0
        self.local = LocalTransport()

    def helper(self, request: Dict[str, Any]) -> Dict[str, Any]:
        self.round_trips += 1
        proc = subprocess.run([self.python, "-S", "-c", remote_helper.SOURCE],
                              input=json.dumps(request).encode(), capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        return dict(json.loads(proc.stdout))

    def run(self, argv: Any, input: Optional[str] = None, timeout: Optional[float] = 120.0) -> Any:
        return self.local.run(argv, input, timeout)

    def close(self) -> None:
        return None


@pytest.fixture(params=["local", "helper"])
def transport(request: pytest.FixtureRequest) -> Transport:
    return LocalTransport() if request.param == "local" else HelperHere()


@pytest.fixture
def index(shared: Path, env: Env) -> Iterator[Path]:
    """A shared index made by the admin (install -d -m 1777) and the page's DPU config."""
    root = Path(tempfile.mkdtemp(prefix="idx-", dir=shared))
    os.chmod(root, 0o755)
    idx = root / "index"
    subprocess.run(["install", "-d", "-m", "1777", str(idx)], check=True)
    env.write_dpu("testlocal", job_index=str(idx))
    yield idx
    for user in (ALICE, MALLORY):
        _stop_runners(Path(os.path.expanduser(f"~{user}")))
    shutil.rmtree(root, ignore_errors=True)
    for user in (ALICE, MALLORY):
        home = Path(os.path.expanduser(f"~{user}"))
        for name in ("work", "dpuhome", "cfg", "precious.txt", "mjobs", "cards"):
            target = home / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists() or target.is_symlink():
                target.unlink()


def mirror(transport: Transport, days: float = 7.0) -> Mirror:
    m = Mirror(get_dpu("testlocal"), None, days, transport)
    m.interval = 0.0
    return m


def card(user: str, jobdir: str, job_id: int = 7, **fields: Any) -> Dict[str, Any]:
    now = time.time()
    data = {"v": CARD_VERSION, "user": user, "store": "feedbeef", "job_id": job_id, "dpu": "testlocal",
            "sequence": "Bias", "options": {"instrument": "WFI"}, "nproc": 1, "ntasks": 1,
            "created": now - 70, "submitted": now - 70, "jobdir": jobdir, "native_ids": ["1"],
            "chunk": 1000, "time_limit": 600}
    data.update(fields)
    return data


def plant(shared: Path, idx: Path, setup: str, cards: Dict[str, Any],
          raw: Optional[Dict[str, str]] = None) -> None:
    """As mallory: run `setup` (Python; J is her job folder), then write her cards."""
    py(MALLORY, """
        import json, os
        J = os.path.expanduser("~/mjobs/7.feedbeef")
        os.makedirs(J + "/p/0", exist_ok=True)
        with open(J + "/p/0/status.json", "w") as fh:
            fh.write('{"state": "DONE", "tasks": ["N"], "reason": "", "started": 1, "ended": 2}')
""" + textwrap.indent(textwrap.dedent(setup), "        ") + f"""
        folder = {str(idx)!r} + "/" + {MALLORY!r}
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o755)
        for name, data in json.loads({json.dumps(cards)!r}).items():
            with open(folder + "/" + name, "w") as fh:
                json.dump(data, fh)
        for name, text in {raw or {}!r}.items():
            with open(folder + "/" + name, "w") as fh:
                fh.write(text)
    """, shared)


def secret_file(folder: Path) -> Path:
    """A file only root may read."""
    path = folder / "secret.txt"
    path.write_text(f"{SECRET}\n" * 10)
    os.chmod(path, 0o600)
    return path


def mjobdir() -> str:
    return os.path.expanduser(f"~{MALLORY}/mjobs/7.feedbeef")


def everything(m: Mirror) -> str:
    """All the page could show of every job: rows, their JSON and each job page."""
    rows = m.rows()
    return json.dumps([r.to_json(time.time()) for r in rows]) + json.dumps(
        [m.job(r.key) for r in rows], default=repr) + json.dumps(m.warnings)


# -- (a) a card that points the page at a file its owner could not have written ----------------
@pytest.mark.parametrize("attack", ["log symlink", "p symlink", "p/0 symlink", "hard link"])
def test_a_planted_link_never_shows_another_users_file(shared: Path, index: Path, transport: Transport,
                                                       attack: str) -> None:
    secret = secret_file(index.parent)
    other = index.parent / "rootdir"
    (other / "0").mkdir(parents=True)
    os.symlink(secret, other / "0" / "log")
    os.chmod(other, 0o755)
    setup = {
        "log symlink": f"os.symlink({str(secret)!r}, J + '/p/0/log')",
        "p symlink": f"import shutil; shutil.rmtree(J + '/p'); os.symlink({str(other)!r}, J + '/p')",
        "p/0 symlink": f"import shutil; shutil.rmtree(J + '/p/0'); "
                       f"os.symlink({str(other / '0')!r}, J + '/p/0')",
        "hard link": "",
    }[attack]
    plant(shared, index, setup, {"7.feedbeef.json": card(MALLORY, mjobdir())})
    if attack == "hard link":   # fs.protected_hardlinks stops mallory; root makes the link for her
        os.link(secret, Path(mjobdir()) / "p" / "0" / "log")
        assert (Path(mjobdir()) / "p" / "0" / "log").stat().st_nlink == 2
    m = mirror(transport)
    try:
        m.refresh(force=True)
        rows = m.rows()
        assert [r.key for r in rows] == [f"{MALLORY}/7.feedbeef"]   # the card itself is fine
        shown = m.job(rows[0].key)
        assert shown is not None and shown["processes"][0]["log"] == []
        assert SECRET not in everything(m)
    finally:
        m.close()


def test_a_jobdir_of_another_user_is_refused_with_a_warning(shared: Path, index: Path,
                                                            transport: Transport) -> None:
    rootjob = index.parent / "rootjob"
    (rootjob / "p" / "0").mkdir(parents=True)
    os.chmod(rootjob, 0o755)
    (rootjob / "p" / "0" / "log").write_text(SECRET)
    plant(shared, index, "", {"7.feedbeef.json": card(MALLORY, str(rootjob))})
    m = mirror(transport)
    try:
        m.refresh(force=True)
        assert m.rows() == []
        assert m.warnings == [f"1 job card(s) ignored: {MALLORY}/7.feedbeef.json: its job folder "
                              f"belongs to uid 0 (root), not to uid {_uid(MALLORY)} ({MALLORY})"]
        assert SECRET not in everything(m)
    finally:
        m.close()


def test_a_fifo_log_does_not_hang_and_a_huge_log_is_read_capped(shared: Path, index: Path,
                                                                 transport: Transport) -> None:
    plant(shared, index, """
        os.mkfifo(J + "/p/0/log")
        os.mkfifo(J + "/runner.json")
        os.makedirs(J + "/p/1", exist_ok=True)
        with open(J + "/p/1/status.json", "w") as fh:
            fh.write('{"state": "DONE", "tasks": ["N"], "reason": "", "started": 1, "ended": 2}')
        with open(J + "/p/1/log", "w") as fh:
            fh.write("early line\\n" * 2000000 + "last line\\n")
        with open(J + "/p/0/status.json", "w") as fh:
            fh.write("x" * (10 << 20))
    """, {"7.feedbeef.json": card(MALLORY, mjobdir(), nproc=2)})
    m = mirror(transport)
    done: List[Any] = []
    try:
        key = f"{MALLORY}/7.feedbeef"
        worker = threading.Thread(target=lambda: done.append((m.refresh(force=True), m.job(key))[1]),
                                  daemon=True)
        worker.start()
        worker.join(60)   # a safety net, not a timing check: a FIFO opened for reading blocks forever
        assert done, "reading the page hung on a FIFO"
        logs = [p["log"] for p in done[0]["processes"]]
        assert logs[0] == []
        assert logs[1][-1] == "last line" and len(logs[1]) == 200
    finally:
        m.close()


# -- (d) bad cards are skipped, the rest of the page works; fixed or deleted cards follow ------
def test_bad_cards_are_skipped_with_warnings_and_the_page_follows_fixes(
        shared: Path, index: Path, transport: Transport, caplog: pytest.LogCaptureFixture) -> None:
    j = mjobdir()
    good = card(MALLORY, j)
    bad = {
        "1.boom.json": card(MALLORY, j, 1, options="boom"),
        "2.huge.json": card(MALLORY, j, 2, nproc=3000000),
        "3.nan.json": card(MALLORY, j, 3, created=float("nan")),
        "4.list.json": card(MALLORY, j, 4, options={"a": [[1]]}),
        "5.other.json": card(MALLORY, j, 5, dpu="elsewhere"),
        "6.alice.json": card(ALICE, j, 6),
    }
    raw = {"8.notjson.json": "{not json",
           "9.surrogate.json": json.dumps(card(MALLORY, j, 9)).replace('"WFI"', '"\\ud800"'),
           "10.deep.json": "[" * 30000 + "]" * 30000}
    plant(shared, index, "", {"7.feedbeef.json": good, **bad}, raw)
    folder = index / MALLORY
    py(MALLORY, f"import os; os.symlink({str(folder / '7.feedbeef.json')!r}, "
                f"{str(folder / '11.link.json')!r})", shared)
    py(MALLORY, f"""
        import os
        os.mkfifo({str(folder / '13.fifo.json')!r})
        with open({str(folder / '14.big.json')!r}, "w") as fh:
            fh.write('{{"v": 1, "pad": "' + "x" * 100000 + '"}}')
    """, shared)
    (folder / "12.foreign.json").write_text(json.dumps(card(MALLORY, j, 12)))
    os.chown(folder / "12.foreign.json", _uid(ALICE), -1)
    m = mirror(transport)
    try:
        with caplog.at_level("WARNING"):
            m.refresh(force=True)
        assert [r.key for r in m.rows()] == [f"{MALLORY}/7.feedbeef"]
        assert m.job(f"{MALLORY}/7.feedbeef") is not None
        expected = ["1.boom", "2.huge", "3.nan", "4.list", "5.other", "6.alice", "8.notjson",
                    "9.surrogate", "10.deep", "11.link", "12.foreign", "13.fifo", "14.big"]
        assert m.warnings[0].startswith(f"{len(expected)} job card(s) ignored: ")
        logged = [r.getMessage() for r in caplog.records if "job card ignored" in r.getMessage()]
        for name in expected:
            assert sum(f"{MALLORY}/{name}.json: " in line for line in logged) == 1, name
        text = "\n".join(logged)
        assert "nproc must be an integer from 1 to 100000, not 3000000" in text
        assert "options must be a mapping" in text and "lone surrogate" in text
        assert "is a symbolic link" in text and f"belongs to uid {_uid(ALICE)} ({ALICE})" in text
        assert "13.fifo.json: is not a regular file" in text and "is larger than 65536 bytes" in text
        # Fixing one card and deleting another: the page follows, no restart.
        py(MALLORY, f"""
            import json, os
            os.remove({str(folder / '8.notjson.json')!r})
            with open({str(folder / '1.boom.json')!r}, "w") as fh:
                json.dump({card(MALLORY, j + "x", 1)!r}, fh)
        """, shared)
        os.utime(folder / "1.boom.json", (time.time() + 5, time.time() + 5))
        py(MALLORY, f"import os; os.makedirs({j + 'x'!r})", shared)
        m.refresh(force=True)
        assert sorted(r.key for r in m.rows()) == [f"{MALLORY}/1.feedbeef", f"{MALLORY}/7.feedbeef"]
        assert m.warnings[0].startswith(f"{len(expected) - 2} job card(s) ignored: ")
        py(MALLORY, f"import os; os.remove({str(folder / '7.feedbeef.json')!r})", shared)
        m.refresh(force=True)
        assert [r.key for r in m.rows()] == [f"{MALLORY}/1.feedbeef"]   # its job left the page
    finally:
        m.close()


def test_a_card_folder_of_someone_else_or_writable_by_others_is_refused(
        shared: Path, index: Path, transport: Transport) -> None:
    # mallory makes a folder named after alice, and her own folder world-writable.
    py(MALLORY, f"""
        import json, os
        os.makedirs(os.path.expanduser("~/cards"))
        os.symlink(os.path.expanduser("~/cards"), {str(index)!r} + "/daemon")
        for user in ({ALICE!r}, {MALLORY!r}):
            os.makedirs({str(index)!r} + "/" + user)
            os.chmod({str(index)!r} + "/" + user, 0o777)
            with open({str(index)!r} + "/" + user + "/7.feedbeef.json", "w") as fh:
                json.dump({card(ALICE, mjobdir())!r}, fh)
        os.makedirs({mjobdir()!r}, exist_ok=True)
    """, shared)
    m = mirror(transport)
    try:
        m.refresh(force=True)
        assert m.rows() == []
        assert m.warnings == ["3 job card(s) ignored: daemon: is a symbolic link"]
        assert sorted(m.warned) == [
            "daemon: is a symbolic link",
            f"{ALICE}: belongs to uid {_uid(MALLORY)} ({MALLORY}), not to uid {_uid(ALICE)} ({ALICE})",
            f"{MALLORY}: is writable by group or others (mode 777)"]
    finally:
        m.close()


# -- (b) and (c): submitting as alice next to mallory --------------------------------------------
def dpu_config(user: str, shared: Path, job_index: Path) -> Dict[str, str]:
    """The user's own DPU config and DPU_HOME (in their home), as their environment."""
    home = Path(os.path.expanduser(f"~{user}"))
    cfg = {"name": "testlocal", "scheduler": "local", "slots": 1, "time_factor": 1, "min_time": 1,
           "workdir": str(home / "work"), "job_index": str(job_index)}
    py(user, f"""
        import os
        os.makedirs(os.path.expanduser("~/cfg"), exist_ok=True)
        with open(os.path.expanduser("~/cfg/testlocal.yaml"), "w") as fh:
            fh.write({yaml.safe_dump(cfg)!r})
    """, shared)
    return {"DPU_HOME": str(home / "dpuhome"), "DPU_CONFIG_PATH": str(home / "cfg"),
            "XDG_CONFIG_HOME": str(home / "cfg" / "xdg")}


def submit(user: str, shared: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return as_user(user, ["/usr/bin/python3", "-m", "dpu_slurm.cli", "run", "Null", "--dpu", "testlocal",
                          "--wait", "--timeout", "60"], shared, check=False, **env)


@pytest.mark.parametrize("squat", ["folder", "symlink"])
def test_a_squatted_card_folder_with_planted_symlinks_overwrites_nothing(shared: Path, index: Path,
                                                                        squat: str) -> None:
    env = dpu_config(ALICE, shared, index)
    py(ALICE, """
        from dpu_slurm.session import open_store
        open_store().meta_set("store_id", "cafe0001")
        with open(__import__("os").path.expanduser("~/precious.txt"), "w") as fh:
            fh.write("precious")
    """, shared, **env)
    victim = Path(os.path.expanduser(f"~{ALICE}/precious.txt"))
    # mallory owns alice's card folder (0777) and plants the temp names of her next card.
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    py(MALLORY, f"""
        import os
        folder = {str(index / ALICE)!r}
        if {squat!r} == "symlink":   # alice's folder a link to a folder of mallory's
            os.makedirs(os.path.expanduser("~/cards"))
            os.symlink(os.path.expanduser("~/cards"), folder)
        else:
            os.makedirs(folder)
        os.chmod(folder, 0o777)
        for pid in range({last}, {last} + 3000):
            os.symlink({str(victim)!r}, "%s/.1.cafe0001.json.%d.tmp" % (folder, pid))
        os.symlink({str(victim)!r}, folder + "/1.cafe0001.json")
    """, shared)
    done = submit(ALICE, shared, env)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious"
    why = "is a symbolic link" if squat == "symlink" else f"belongs to uid {_uid(MALLORY)}"
    assert f"your card folder {index / ALICE} {why}" in done.stderr
    assert "the job is submitted" in done.stderr
    owners = {p.lstat().st_uid for p in (index / ALICE).iterdir()}
    assert owners == {_uid(MALLORY)}   # alice wrote nothing into the squatted folder


def test_the_first_submitter_makes_the_index_shared_so_the_next_user_can_add_cards(
        shared: Path, index: Path) -> None:
    fresh = index.parent / "fresh" / "index"   # parent made by the admin, the index by nobody yet
    subprocess.run(["install", "-d", "-m", "1777", str(fresh.parent)], check=True)
    env_a, env_m = dpu_config(ALICE, shared, fresh), dpu_config(MALLORY, shared, fresh)
    assert submit(ALICE, shared, env_a).returncode == 0
    mode = fresh.lstat().st_mode
    assert stat.S_IMODE(mode) == 0o1777 and fresh.lstat().st_uid == _uid(ALICE)
    done = submit(MALLORY, shared, env_m)
    assert done.returncode == 0 and "card" not in done.stderr, done.stderr
    for user in (ALICE, MALLORY):
        st = (fresh / user).lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (_uid(user), 0o755)
    Path(os.environ["DPU_CONFIG_PATH"], "testlocal.yaml").write_text(yaml.safe_dump(
        {"name": "testlocal", "scheduler": "local", "job_index": str(fresh)}))
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        assert sorted(r.user for r in m.rows()) == [ALICE, MALLORY]
        assert m.warnings == []
    finally:
        m.close()


def _uid(user: str) -> int:
    import pwd
    return pwd.getpwnam(user).pw_uid


# -- a card write killed at any step leaves no card a reader could take ---------------------
@pytest.mark.parametrize("step", ["fchmod", "write", "replace"])
def test_a_card_write_killed_before_the_rename_leaves_no_partial_card(shared: Path, index: Path,
                                                                      step: str) -> None:
    proc = py(ALICE, f"""
        import os, signal
        from dpu_slurm.transport import owned
        os.makedirs({str(index / ALICE)!r})
        os.chmod({str(index / ALICE)!r}, 0o755)
        real = getattr(os, {step!r})
        def die(*args, **kwargs):
            if {step!r} == "write":
                real(*args, **kwargs)   # half the card is in the temp file
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(os, {step!r}, die)
        owned.write_own({str(index)!r}, {ALICE!r}, "1.cafe0001.json", b'{{"v": 1, "user": "x"}}' * 100)
    """, shared, check=False)
    assert proc.returncode in (-9, 128 + 9), proc.stderr   # runuser reports the SIGKILL as 137
    names = os.listdir(index / ALICE)
    assert len(names) == 1 and names[0].startswith(".1.cafe0001.json.") and names[0].endswith(".tmp")
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        assert m.rows() == [] and m.warnings == []
    finally:
        m.close()


@pytest.mark.parametrize("runner, record", [
    ("garbage", '{"state": "DONE", "tasks": [["x"]], "reason": {"a": 1}}'),
    ('{"pid": "x", "states": 5}', '{"state": [], "tasks": 3}'),
    ('{"pid": null, "states": [[1, 2, 3]]}', '[1, 2]'),
])
def test_hostile_files_in_a_job_folder_break_only_that_job(shared: Path, index: Path, runner: str,
                                                           record: str) -> None:
    plant(shared, index, f"""
        with open(J + "/runner.json", "w") as fh:
            fh.write({runner!r})
        with open(J + "/p/0/status.json", "w") as fh:
            fh.write({record!r})
        os.makedirs(J + "-fine/p/0")
    """, {"7.feedbeef.json": card(MALLORY, mjobdir()),
          "8.feedbeef.json": card(MALLORY, mjobdir() + "-fine", 8, sequence="Fine")})
    m = mirror(LocalTransport())
    try:
        m.refresh(force=True)
        rows = {r.sequence: r for r in m.rows()}
        assert set(rows) == {"Bias", "Fine"}
        assert everything(m)
    finally:
        m.close()


def test_a_flood_of_junk_folders_hides_no_user_and_no_escape_reaches_a_terminal(
        shared: Path, index: Path, transport: Transport) -> None:
    plant(shared, index, """
        import os
        root = os.path.dirname(os.path.dirname(J))
    """, {"7.feedbeef.json": card(MALLORY, mjobdir())})
    py(MALLORY, f"""
        import os
        for n in range(3000):
            os.mkdir({str(index)!r} + "/a%05d" % n)
        os.mkdir({str(index)!r} + "/\x1b[2Jevil")
        os.mkdir(os.fsencode({str(index)!r}) + b"/\\xfe")
        with open(os.fsencode({str(index / MALLORY)!r}) + b"/\\xff.json", "w") as fh:
            fh.write("not a card")
    """, shared)
    m = mirror(transport)
    try:
        m.refresh(force=True)
        assert [r.key for r in m.rows()] == [f"{MALLORY}/7.feedbeef"]
        assert m.warnings[0].startswith("102 job card(s) ignored: ")
        assert "and 2902 more entries refused" in " ".join(m.warned)
        assert f"{MALLORY}/\\udcff.json: not a JSON card" in " ".join(m.warned)
        assert not any("\x1b" in w for w in [*m.warnings, *m.warned])
        json.dumps(m.warnings, ensure_ascii=False).encode("utf-8")
    finally:
        m.close()


# -- red team: a workdir in a shared scratch folder that another user prepared ------------------
def scratch_config(user: str, shared: Path, job_index: Path, scratch: Path) -> Dict[str, str]:
    """The user's DPU config with its workdir in a shared scratch folder (like /scratch/{user})."""
    env = dpu_config(user, shared, job_index)
    cfg = {"name": "testlocal", "scheduler": "local", "slots": 1, "time_factor": 1, "min_time": 1,
           "workdir": f"{scratch}/{{user}}/dpu", "job_index": str(job_index)}
    py(user, f"""
        import os
        with open(os.path.expanduser("~/cfg/testlocal.yaml"), "w") as fh:
            fh.write({yaml.safe_dump(cfg)!r})
    """, shared)
    return env


@pytest.mark.parametrize("plant_what", ["bundle", "open folder"])
def test_a_workdir_prepared_by_another_user_is_refused_and_runs_none_of_their_code(
        shared: Path, index: Path, plant_what: str) -> None:
    scratch = index.parent / "scratch"
    subprocess.run(["install", "-d", "-m", "1777", str(scratch)], check=True)
    env = scratch_config(ALICE, shared, index, scratch)
    marker = scratch / "pwned"
    # mallory makes alice's future workdir (the scratch is shared like /tmp) and, in it, the
    # unpacked bundle alice's submit will look for (its name is the hash of public code), with
    # a worker of her own.
    py(MALLORY, f"""
        import os
        from dpu_slurm import bundle
        from dpu_slurm.session import awepipe_path
        work = {str(scratch / ALICE / "dpu")!r}
        os.makedirs(work + "/jobs")
        if {plant_what!r} == "bundle":
            digest = bundle.tree_hash(bundle.members(awepipe_path()))
            pkg = work + "/bundles/" + digest + "/worker/dpu_slurm"
            os.makedirs(pkg)
            open(pkg + "/__init__.py", "w").close()
            with open(pkg + "/worker.py", "w") as fh:
                fh.write("import os\\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\\n")
        for folder, dirs, files in os.walk({str(scratch / ALICE)!r}):
            os.chmod(folder, 0o777)
    """, shared)
    done = submit(ALICE, shared, env)
    assert not marker.exists(), "alice ran mallory's code"
    assert done.returncode != 0
    assert f"{scratch / ALICE}" in done.stderr and f"uid {_uid(MALLORY)}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_both_transports_refuse_a_workdir_others_can_change_and_accept_ones_own(
        shared: Path, index: Path, transport: Transport) -> None:
    scratch = index.parent / "scratch"
    subprocess.run(["install", "-d", "-m", "1777", str(scratch)], check=True)
    py(MALLORY, f"""
        import os
        os.makedirs({str(scratch / "squat" / "dpu")!r})
        os.symlink({str(scratch)!r}, {str(scratch / "link")!r})
    """, shared)
    for path, why in [(scratch / "squat" / "dpu", f"{scratch / 'squat'} belongs to uid {_uid(MALLORY)}"),
                      (scratch / "link" / "mine", f"{scratch / 'link'} is a symbolic link of uid"),
                      (scratch, f"{scratch} is writable by other users (mode 1777)")]:
        with pytest.raises(DPUError) as err:
            transport.own_workdir(str(path), ("jobs",))
        assert why in str(err.value) and "is not safe for your jobs" in str(err.value)
    mine = scratch / "root-owned" / "dpu"
    transport.own_workdir(str(mine), ("jobs", "bundles"))   # made by us in the sticky scratch: fine
    # Our own link whose target leads through a link of mallory's back to our folder: she could
    # point hers elsewhere later, although the resolved path is all ours.
    py(MALLORY, f"import os; os.symlink({str(scratch / 'root-owned')!r}, os.path.expanduser('~/mlink'))",
       shared)
    os.symlink(os.path.expanduser(f"~{MALLORY}/mlink"), scratch / "via")
    try:
        with pytest.raises(DPUError, match=f"is not safe for your jobs: .* uid {_uid(MALLORY)}"):
            transport.own_workdir(str(scratch / "via" / "dpu"), ("jobs",))
    finally:
        os.unlink(os.path.expanduser(f"~{MALLORY}/mlink"))
    assert stat.S_IMODE((mine / "jobs").stat().st_mode) == 0o755
    os.chmod(mine, 0o777)
    with pytest.raises(DPUError, match="is writable by other users"):
        transport.own_workdir(str(mine), ())


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_a_session_log_in_a_shared_working_folder_writes_through_no_planted_link(
        shared: Path, index: Path, plant: str) -> None:
    """The prompt writes YYYYmmdd_HHMMSS.log in the working folder: in a shared one (a sticky
    scratch, a project folder) those names are known in advance."""
    scratch = index.parent / "scratch"
    subprocess.run(["install", "-d", "-m", "1777", str(scratch)], check=True)
    env = dpu_config(ALICE, shared, index)
    victim = Path(os.path.expanduser(f"~{ALICE}/precious.txt"))
    py(ALICE, f"open({str(victim)!r}, 'w').write('precious')", shared)
    py(MALLORY, f"""
        import os, time
        now = time.time()
        for s in range(-5, 300):   # every name of the next five minutes
            name = {str(scratch)!r} + "/" + time.strftime("%Y%m%d_%H%M%S.log", time.localtime(now + s))
            if {plant!r} == "symlink":
                os.symlink({str(victim)!r}, name)
            else:
                os.mkfifo(name)
                os.chmod(name, 0o666)   # writable by alice: opening it to append would block
    """, shared)
    done = py(ALICE, f"""
        import os
        os.chdir({str(scratch)!r})
        from dpu_slurm.processor import Processor
        dpu = Processor("testlocal")
        dpu._say("a line for the session log")
        print("ended")
    """, shared, **env)
    assert victim.read_text() == "precious"
    assert "ended" in done.stdout and "cannot write the session log" in done.stderr, done.stderr


def test_a_job_file_far_larger_than_its_processes_need_is_not_read(shared: Path, index: Path,
                                                                    transport: Transport) -> None:
    """A card of one process whose runner.json is 1 MB (up to 16 MB, hard-linked into 10,000
    job folders, it cost the page seconds of CPU and hundreds of MB per card). The page reads a
    job's files only up to what its number of processes can need."""
    runner = {"pid": os.getpid(), "pstart": Path(f"/proc/{os.getpid()}/stat").read_text()
              .rsplit(")", 1)[1].split()[19], "states": [["RUNNING", ""]] * 40000, "procs": {}, "live": [0]}
    plant(shared, index, "", {"7.feedbeef.json": card(MALLORY, mjobdir())})
    big = Path(mjobdir()) / "runner.json"
    big.write_text(json.dumps(runner))   # mallory's file (written here: too long for an argv)
    os.chown(big, _uid(MALLORY), -1)
    assert big.stat().st_size > 500_000
    (Path(mjobdir()) / "p" / "0" / "status.json").unlink()   # only runner.json could say RUNNING
    m = mirror(transport)
    try:
        m.refresh(force=True)
        rows = m.rows()
        assert [r.key for r in rows] == [f"{MALLORY}/7.feedbeef"]
        assert rows[0].status != "RUNNING"   # what the oversized file said was not read
    finally:
        m.close()
