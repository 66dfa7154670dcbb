"""`dpu bulk`: each manifest entry submitted exactly once, cron-safe, with documented exit codes."""
from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from dpu_slurm import bulk, cli
from dpu_slurm.session import open_store
from tests.conftest import REPO, Env

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def testlocal(env: Env) -> None:
    env.write_dpu()


def manifest(env: Env, text: str, name: str = "night.yaml") -> Path:
    path = env.cwd / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_bulk(capsys: Capture, *argv: str, code: int = 0) -> Dict[str, Any]:
    assert cli.main(["bulk", *argv, "--json"]) == code, capsys.readouterr()
    return json.loads(capsys.readouterr().out)


def jobs() -> List[Any]:
    store = open_store()
    try:
        return store.jobs()
    finally:
        store.close()


NIGHT = """\
    dpu: testlocal
    defaults: {dpu_mem: 200, options: {C: 1}}
    runs:
      - {key: null-one, sequence: Null, options: {m: first}}
    templates:
      - sequence: ReadNoise
        options: {i: WFI, d: "{date}", c: "{ccd}"}
        key: "rn-{date}-{ccd}"
        parameters:
          date: [2000-04-28, 2000-04-29]
          ccd: [ccd50, ccd51]
    """


def test_cron_style_run_twice_submits_each_entry_once(env: Env, capsys: Capture) -> None:
    path = manifest(env, NIGHT)
    first = run_bulk(capsys, str(path))
    assert first["counts"]["submitted"] == 5 and first["exit"] == 0
    keys = sorted(e["key"] for e in first["entries"])
    assert keys == ["null-one", "rn-2000-04-28-ccd50", "rn-2000-04-28-ccd51",
                    "rn-2000-04-29-ccd50", "rn-2000-04-29-ccd51"]
    submitted = jobs()
    assert len(submitted) == 5
    # dates stay text (YAML would make them dates), defaults are merged, per-run options kept
    rn = [j for j in submitted if j.sequence == "ReadNoise"]
    assert sorted((j.options["date"], j.options["chip"]) for j in rn) == [
        ("2000-04-28", "ccd50"), ("2000-04-28", "ccd51"), ("2000-04-29", "ccd50"), ("2000-04-29", "ccd51")]
    assert all(j.options["commit"] is True and j.dpu_options["dpu_mem"] == 200 for j in submitted)

    second = run_bulk(capsys, str(path))
    assert second["counts"]["submitted"] == 0 and second["counts"]["skipped"] == 5
    assert second["exit"] == 0
    assert len(jobs()) == 5, "the rerun submitted nothing"
    by_key = {e["key"]: e["jobid"] for e in second["entries"]}
    assert by_key == {e["key"]: e["jobid"] for e in first["entries"]}


def test_derived_keys_make_the_same_run_in_another_manifest_a_duplicate(env: Env, capsys: Capture) -> None:
    one = manifest(env, "runs: [{sequence: Null, options: {m: hi, n: 2}, dpu: testlocal}]", "a.yaml")
    two = manifest(env, "dpu: testlocal\nruns: [{sequence: Null, options: {n: 2, m: hi}}]", "b.yaml")
    assert run_bulk(capsys, str(one))["counts"]["submitted"] == 1
    again = run_bulk(capsys, str(two))
    assert again["counts"]["skipped"] == 1 and again["entries"][0]["key"].startswith("auto-")
    assert len(jobs()) == 1


BAD = """\
    dpu: testlocal
    runs:
      - {key: good-1, sequence: Null}
      - {key: typo, sequence: Nul}
      - {key: bad-option, sequence: Null, options: {n: many}}
      - {key: good-2, sequence: Null, options: {m: two}}
      - {key: good-1, sequence: Null, options: {m: same key}}
      - {key: no-dpu, sequence: Null, dpu: nosuchdpu}
      - {sequense: Null}
    templates:
      - {sequence: Null, options: {m: "{missing}"}, parameters: {x: [1]}}
    """


def test_bad_entries_are_reported_and_the_others_submitted(env: Env, capsys: Capture) -> None:
    out = run_bulk(capsys, str(manifest(env, BAD)), code=bulk.BAD)
    states = {e["where"].split(" ")[0]: (e["state"], e["error"] or "") for e in out["entries"]}
    assert states["runs[0]"][0] == states["runs[3]"][0] == "submitted"
    assert "unknown sequence 'Nul'; did you mean 'Null'?" in states["runs[1]"][1]
    assert "takes an int" in states["runs[2]"][1]
    assert "also the key of runs[0]" in states["runs[4]"][1]
    assert "unknown DPU 'nosuchdpu'" in states["runs[5]"][1]
    assert "unknown key(s) sequense" in states["runs[6]"][1]
    assert "placeholder {missing} is not a parameter" in states["templates[0]"][1]
    assert sorted(j.options["message"] for j in jobs()) == ["", "two"]


def test_bad_entry_lines_name_the_manifest_line(env: Env, capsys: Capture) -> None:
    assert cli.main(["bulk", str(manifest(env, BAD))]) == bulk.BAD
    out = capsys.readouterr().out
    assert "bad entry runs[1] (line 4): unknown sequence 'Nul'" in out
    assert "submitted good-1 -> job " in out
    assert out.strip().splitlines()[-1].startswith("dpu bulk: 8 entries: 2 submitted, 0 skipped, 6 bad in ")


def test_strict_submits_nothing_when_an_entry_is_bad(env: Env, capsys: Capture) -> None:
    out = run_bulk(capsys, "--strict", str(manifest(env, BAD)), code=bulk.BAD)
    assert out["counts"]["submitted"] == 0 and out["counts"]["not-submitted"] == 2
    assert jobs() == []


def test_dry_run_validates_and_renders_but_submits_nothing(env: Env, capsys: Capture) -> None:
    env.write_dpu("sl", scheduler="slurm", workdir=str(env.work / "sl"), partitions=[{"name": "bad name;x"}])
    text = NIGHT.replace("    templates:", "      - {key: on-slurm, sequence: Null, dpu: sl}\n    templates:")
    assert cli.main(["bulk", "--dry-run", str(manifest(env, text))]) == bulk.BAD
    out = capsys.readouterr().out
    assert "would submit rn-2000-04-29-ccd51: ReadNoise C=1 i=WFI d=2000-04-29 c=ccd51 on testlocal " \
           "(1 processes, " in out
    # the DPU's config refuses the partition name (what sbatch accepts): found now, not at submission
    assert "bad entry runs[1] (line 5): " in out
    assert "sl.yaml:4: partitions[0].name: 'bad name;x' is not allowed; allowed: letters, digits" in out
    assert out.strip().splitlines()[-1].startswith(
        "dpu bulk --dry-run: 6 entries: 0 submitted, 5 would submit, 0 skipped, 1 bad in ")
    assert jobs() == []
    run_bulk(capsys, str(manifest(env, NIGHT)))
    again = run_bulk(capsys, "--dry-run", str(manifest(env, NIGHT)))
    assert again["counts"]["skipped"] == 5 and again["counts"]["would-submit"] == 0


def test_max_queued_leaves_the_rest_for_the_next_run(env: Env, capsys: Capture) -> None:
    path = manifest(env, """\
        dpu: testlocal
        max_queued: 2
        templates: [{sequence: Null, options: {s: "{s}"}, parameters: {s: [30, 30.5, 31, 31.5, 32]}}]
        """)
    first = run_bulk(capsys, str(path), code=bulk.DEFERRED)
    assert (first["counts"]["submitted"], first["counts"]["deferred"]) == (2, 3)
    again = run_bulk(capsys, str(path), code=bulk.DEFERRED)
    assert (again["counts"]["submitted"], again["counts"]["skipped"]) == (0, 2), "2 are still queued"
    assert cli.main(["cancel", "--force", "--dpu", "testlocal", *[str(j.id) for j in jobs()]]) == 0
    capsys.readouterr()
    later = run_bulk(capsys, "--max-queued", "10", str(path))
    assert (later["counts"]["submitted"], later["counts"]["skipped"]) == (3, 2)
    assert len(jobs()) == 5


def test_two_bulk_runs_at_once_submit_each_entry_once(env: Env) -> None:
    path = manifest(env, """\
        dpu: testlocal
        templates: [{sequence: Null, options: {m: "night {n}"}, parameters: {n: [1, 2, 3, 4, 5, 6, 7, 8]}}]
        """)
    cmd = [sys.executable, "-m", "dpu_slurm.cli", "bulk", str(path)]
    envvars = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=envvars, cwd=env.cwd) for _ in range(2)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    for out, err, code in results:
        assert code == 0, (out, err)
        assert "error" not in err.lower() and "locked" not in err.lower(), err
    summaries = sorted(out.strip().splitlines()[-1] for out, _, _ in results)
    assert "8 submitted, 0 skipped" in summaries[0] + summaries[1]
    assert "0 submitted, 8 skipped" in summaries[0] + summaries[1]
    assert sorted(j.options["message"] for j in jobs()) == [f"night {n}" for n in range(1, 9)]


def test_a_held_lock_times_out_with_exit_75_and_submits_nothing(env: Env, capsys: Capture) -> None:
    path = manifest(env, "dpu: testlocal\nruns: [{sequence: Null}]")
    with open(env.home / "bulk.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        t0 = time.monotonic()
        assert cli.main(["bulk", "--lock-timeout", "0.3", str(path)]) == bulk.LOCKED
        assert time.monotonic() - t0 < 5
    assert "another dpu bulk held" in capsys.readouterr().err
    assert jobs() == []


def test_a_run_killed_while_submitting_is_reconciled_not_resubmitted(env: Env, capsys: Capture) -> None:
    path = manifest(env, "dpu: testlocal\nruns: [{key: a, sequence: Null, options: {m: a}},"
                         " {key: b, sequence: Null, options: {m: b}}]")
    run_bulk(capsys, str(path))
    store = open_store()
    with store.transaction() as db:  # as if killed after submitting 'a' and before submitting 'b'
        db.execute("UPDATE bulk_entries SET state='submitting', job_id=NULL")
        db.execute("DELETE FROM jobs WHERE options LIKE '%\"b\"%'")
    store.close()
    out = run_bulk(capsys, str(path))
    states = {e["key"]: e["state"] for e in out["entries"]}
    assert states == {"a": "skipped", "b": "submitted"}
    assert sorted(j.options["message"] for j in jobs()) == ["a", "b"]


def test_manifest_errors_are_exit_2_with_file_and_line(env: Env, capsys: Capture) -> None:
    assert cli.main(["bulk", str(env.cwd / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err
    bad = manifest(env, "runs:\n  - {sequence: Null\n")
    assert cli.main(["bulk", str(bad)]) == 2
    assert "night.yaml:3: malformed YAML" in capsys.readouterr().err
    assert cli.main(["bulk", str(manifest(env, "jobs: []"))]) == 2
    assert "unknown key(s) jobs; allowed: dpu, max_queued" in capsys.readouterr().err
    assert cli.main(["bulk", str(manifest(env, "max_queued: 0\nruns: [{sequence: Null}]"))]) == 2
    assert jobs() == []


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_tty_and_plain_lines_otherwise() -> None:
    entries = [bulk.Entry(f"runs[{i}]", key=f"k{i}", state="skipped") for i in range(3)]
    bad = bulk.Entry("runs[3] (line 9)", state="bad", error="unknown sequence 'X'")
    tty, plain = Tty(), io.StringIO()
    for out in (tty, plain):
        report = bulk.Reporter(4, out, verbose=False)
        for e in [*entries, bad]:
            report.entry(e)
        report.summary("dpu bulk: 4 entries")
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().splitlines() == ["bad entry runs[3] (line 9): unknown sequence 'X'",
                                             "dpu bulk: 4 entries"]
    assert "[##############################] 4/4 bad 1 skipped 3" in tty.getvalue()
    assert "\r\x1b[Kbad entry runs[3] (line 9)" in tty.getvalue()


def test_bulk_then_wait_in_a_script(env: Env, capsys: Capture) -> None:
    path = manifest(env, "dpu: testlocal\nruns: [{sequence: Null, options: {n: 2}}, "
                         "{sequence: 'Null>Null', options: {x: 1}}]")
    ids = [str(e["jobid"]) for e in run_bulk(capsys, str(path))["entries"]]
    assert cli.main(["wait", "--dpu", "testlocal", ids[0], "--timeout", "60"]) == 0
    assert cli.main(["wait", "--dpu", "testlocal", *ids, "--timeout", "60"]) == 1  # one failed
    out = capsys.readouterr().out
    assert f"Jobid {ids[1]} has status FINISHED N/E/A/S/U 0/1/0/1/0" in out


# -- issue 10: one model for manifests; a bad entry is reported, the others go on -----------------
def test_an_infinite_option_is_reported_with_file_and_line_and_the_others_submit(
        env: Env, capsys: Capture) -> None:
    path = manifest(env, """\
        dpu: testlocal
        runs:
          - {key: good-1, sequence: Null}
          - key: inf
            sequence: Null
            options: {s: .inf}
          - {key: good-2, sequence: Null, send_code: "no"}
          - {key: good-3, sequence: Null, options: {s: 1e308}}
          - {key: good-4, sequence: Null, dpu_mem: 0.5}
          - {key: good-5, sequence: Null, options: {m: five}}
        """)
    out = run_bulk(capsys, str(path), code=bulk.BAD)  # was: a traceback, nothing submitted
    states = {e["key"] or e["where"]: (e["state"], e["error"] or "") for e in out["entries"]}
    assert states["good-1"][0] == states["good-5"][0] == "submitted"
    bad = [e for e in out["entries"] if e["state"] == "bad"]
    assert [e["where"] for e in bad] == ["runs[1] (line 4)", "runs[2] (line 7)", "runs[3] (line 8)",
                                         "runs[4] (line 9)"]
    assert bad[0]["error"] == f"{path}:6: options.s: must be a finite number, got inf"
    assert bad[1]["error"].startswith(f"{path}:7: send_code: must be true or false")
    assert "more than 31536000 s (365 days)" in bad[2]["error"]
    assert bad[3]["error"].startswith(f"{path}:9: dpu_mem must be a positive number of MB from 16")
    assert len(jobs()) == 2
    strict = run_bulk(capsys, "--strict", str(path), code=bulk.BAD)
    assert strict["counts"]["submitted"] == 0


def test_duplicate_keys_in_a_manifest_are_refused_with_both_lines(env: Env, capsys: Capture) -> None:
    path = manifest(env, """\
        dpu: testlocal
        runs:
          - {key: first-night, sequence: Null}
        runs:
          - {key: second-night, sequence: Null}
        """)
    assert cli.main(["bulk", str(path)]) == 2  # was: the first night silently dropped, exit 0
    assert f"{path}:4: key 'runs': given twice (lines 2 and 4); keep one" in capsys.readouterr().err
    assert jobs() == []


def test_an_alias_bomb_is_refused_with_a_clear_error(env: Env, capsys: Capture) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    path = env.cwd / "bomb.yaml"
    path.write_text("templates:\n  - sequence: Null\n    parameters: {x: [1]}\n    options:\n      "
                    + "\n      ".join(rows) + "\n", encoding="utf-8")
    assert cli.main(["bulk", str(path)]) == 2  # was: 74 s, then MemoryError
    assert f"{path}:5: this value is used again through an alias" in capsys.readouterr().err
    assert jobs() == []


def test_the_entry_cap_counts_all_templates_before_expanding(env: Env, capsys: Capture) -> None:
    values = "[" + ", ".join(str(i) for i in range(30_000)) + "]"
    templates = "".join(f"  - {{sequence: Null, options: {{n: 1}}, parameters: {{t{i}: {values}}}}}\n"
                        for i in range(5))
    path = manifest(env, "dpu: testlocal\ntemplates:\n" + templates)
    assert cli.main(["bulk", "--dry-run", str(path)]) == 2  # was: 150k entries expanded
    err = capsys.readouterr().err
    assert f"{path}: expands to 150000 runs (0 runs, templates[0] (line 3): 30000," in err
    assert "at most 100000 in all" in err


def test_send_code_must_be_a_yaml_boolean(env: Env, capsys: Capture) -> None:
    path = manifest(env, """\
        dpu: testlocal
        runs:
          - {key: quoted, sequence: Null, send_code: "no"}
          - {key: plain, sequence: Null, send_code: no}
        """)
    out = run_bulk(capsys, "--dry-run", str(path), code=bulk.BAD)
    states = {e["key"] or e["where"]: e for e in out["entries"]}
    assert states["runs[0] (line 3)"]["error"].startswith(f"{path}:3: send_code: must be true or false")
    assert states["plain"]["state"] == "would-submit"


def test_a_home_relative_workdir_renders_for_sge_and_pbs_in_a_dry_run(env: Env, capsys: Capture) -> None:
    env.write_dpu("sg", scheduler="sge", workdir="~/dpu/{name}")
    env.write_dpu("pb", scheduler="pbs", workdir="~/dpu/{name}")
    path = manifest(env, "runs:\n  - {key: a, sequence: Null, dpu: sg}\n"
                         "  - {key: b, sequence: Null, dpu: pb}\n")
    out = run_bulk(capsys, "--dry-run", str(path))  # '~' used to reach '#$ -o' unexpanded: bad entry
    assert [e["state"] for e in out["entries"]] == ["would-submit", "would-submit"]


def test_one_run_hashes_and_checks_once_and_every_job_gets_the_same_code(
        env: Env, capsys: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk run is one snapshot of the code: the tree is hashed and the workdir checked at the
    first entry only (they cost more than the sbatch of a small entry), and all jobs share it."""
    from dpu_slurm import bundle
    from dpu_slurm.transport import local

    builds: List[int] = []
    checks: List[str] = []
    real_build, real_own = bundle.build, local.folders.own_workdir
    monkeypatch.setattr(bundle, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    monkeypatch.setattr(local.folders, "own_workdir",
                        lambda path, subs=(): checks.append(path) or real_own(path, subs))
    out = run_bulk(capsys, str(manifest(env, NIGHT)))
    assert out["counts"]["submitted"] == 5
    assert len(builds) == 1 and len(checks) == 1, (builds, checks)
    assert len({j.bundle for j in jobs()}) == 1


def test_runs_at_the_prompt_hash_the_code_again(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only bulk freezes the code: two dpu.run calls with an edit between them ship two bundles."""
    from dpu_slurm.processor import Processor

    code = env.cwd / "awepipe"
    import shutil
    shutil.copytree(REPO / "examples" / "awepipe", code)
    dpu = Processor("testlocal", awepipe=code, out=io.StringIO())
    try:
        first = dpu.run("Null", m="a", return_jobid=True)
        (code / "edited.py").write_text("X = 1\n")
        second = dpu.run("Null", m="b", return_jobid=True)
        by_id = {j.id: j.bundle for j in jobs()}
        assert by_id[first] != by_id[second]
    finally:
        dpu.close()
