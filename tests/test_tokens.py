"""Tokens of the web submission API: shown once, stored only as a hash, revocable."""
from __future__ import annotations

import json
import sqlite3

import pytest

from dpu_slurm import cli, tokens
from dpu_slurm.errors import DPUError
from dpu_slurm.session import open_store
from dpu_slurm.store import SCHEMA_VERSION, Store

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def store():
    s = open_store()
    yield s
    s.close()


def test_token_verifies_and_is_stored_only_as_a_hash(store: Store) -> None:
    token, info = tokens.create(store, "alice", "cron on login1")
    assert token.startswith(f"dpu_{info.id}_") and len(token) == 56
    assert tokens.verify(store, token).user == "alice"
    wal = store.path.with_name(store.path.name + "-wal")
    raw = store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    secret = token.rsplit("_", 1)[1]
    assert secret.encode() not in raw and token.encode() not in raw
    listed = tokens.list_tokens(store)
    assert [(t.id, t.user, t.label) for t in listed] == [(info.id, "alice", "cron on login1")]
    assert listed[0].last_used is not None, "verify records when the token was last used"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),   # one character of the secret changed
    lambda t: t.replace("dpu_", "dpx_"),
    lambda t: "",
    lambda t: None,
    lambda t: t + "x",
    lambda t: "dpu_00000000_" + t.rsplit("_", 1)[1],     # right secret, wrong id
])
def test_wrong_tokens_are_refused(store: Store, mangle) -> None:
    token, _ = tokens.create(store, "alice")
    assert tokens.verify(store, mangle(token)) is None


def test_revoked_token_no_longer_verifies(store: Store) -> None:
    token, info = tokens.create(store, "alice")
    other, _ = tokens.create(store, "alice")
    tokens.revoke(store, info.id)
    assert tokens.verify(store, token) is None
    assert tokens.verify(store, other) is not None
    with pytest.raises(DPUError, match="no token with id 'nope'"):
        tokens.revoke(store, "nope")


def test_label_must_be_one_short_line(store: Store) -> None:
    with pytest.raises(DPUError, match="one line"):
        tokens.create(store, "alice", "two\nlines")


def test_token_commands(capsys: Capture) -> None:
    assert cli.main(["token", "create", "--label", "web", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert cli.main(["token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert made["token"] not in json.dumps(listed)
    assert cli.main(["token", "revoke", made["id"]]) == 0
    capsys.readouterr()
    assert cli.main(["token", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["token", "revoke", made["id"]]) == 2
    assert "no token with id" in capsys.readouterr().err


def test_version_2_store_gains_the_bulk_and_token_tables_and_keeps_its_jobs(tmp_path) -> None:
    path = tmp_path / "v2.sqlite"
    store = Store(path)
    job_id = store.record("local", "alice", "Null", {"message": "kept"}, {}, 1, 1)
    store.close()
    db = sqlite3.connect(path)   # make it a version-2 store again
    db.executescript("DROP TABLE bulk_entries; DROP TABLE tokens; ALTER TABLE procs DROP COLUMN missing;"
                     # what versions 5 (reruns) and 6 (retry claims) added
                     "ALTER TABLE procs DROP COLUMN attempt; DROP TABLE attempts; DROP TABLE retry_claims;"
                     "UPDATE meta SET value='2' WHERE key='schema_version';")
    db.close()
    store = Store(path)
    assert store.meta_get("schema_version") == str(SCHEMA_VERSION)
    assert [p.missing for p in store.procs(job_id)] == [None], "version 4 added procs.missing"
    assert store.job(job_id).options == {"message": "kept"}
    token, _ = tokens.create(store, "alice")
    assert tokens.verify(store, token) is not None
    store.close()
