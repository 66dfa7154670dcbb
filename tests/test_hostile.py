"""Hostile option values and paths reach the task unchanged and execute nothing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List

import pytest

from dpu_slurm import cli
from dpu_slurm.errors import OptionError
from tests.conftest import Env, Session


def hostile_values(marker: Path) -> List[str]:
    return [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"; touch {marker}; echo ",
        f"' ; touch {marker} ; '",
        f'" ; touch {marker} ; "',
        f"line one\nline two\n$(touch {marker})\n",
        "ünïcødé ✓ 東京 \U0001F52D",
        "back\\slash \\n not a newline %s {0} {{jinja}} {% raw %}",
        "".join(chr(c) for c in range(1, 32) if c not in (10, 13)),  # control bytes, tabs, escapes
        ("10kB:'\"$`;\n" * 1100)[:10240],
    ]


@pytest.fixture
def hostile_session(make_session: Callable[..., Session], env: Env) -> Session:
    # The DPU's own folders hold a quote, a space and a command substitution too.
    return make_session(workdir=str(env.work / f"we'ird dir $(touch {env.root / 'pwned_by_path'})"))


def test_hostile_messages_reach_the_task_byte_exact_and_run_nothing(hostile_session: Session,
                                                                     env: Env) -> None:
    marker = env.root / "pwned"
    values = hostile_values(marker)
    ids = [hostile_session.dpu.run("Null", m=value, C=1, return_jobid=True) for value in values]
    views = hostile_session.dpu.wait(ids, timeout=60, interval=0.05)
    assert [v.counts.letters for v in views] == [(1, 0, 0, 0, 0)] * len(values)
    for jid, value in zip(ids, values, strict=True):
        assert jid is not None
        [obj] = hostile_session.dpu.get_job_result(jid)
        assert obj["message"] == value
        assert obj["message"].encode("utf-8") == value.encode("utf-8")
    assert not marker.exists()
    assert not (env.root / "pwned_by_path").exists()
    assert not [p for p in env.root.iterdir() if p.name.startswith("pwned")]


def test_hostile_values_through_the_command_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.write_dpu()
    marker = env.root / "pwned_cli"
    value = f"it's \"$(touch {marker})\" `touch {marker}`; touch {marker}\n✓"
    assert cli.main(["run", "--dpu", "testlocal", "--json", "--wait", "Null", f"m={value}", "C=1"]) == 0
    [view] = json.loads(capsys.readouterr().out)
    assert cli.main(["result", "--dpu", "testlocal", "--json", str(view["jobid"])]) == 0
    [obj] = json.loads(capsys.readouterr().out)
    assert obj["message"] == value
    assert not marker.exists()


def test_a_dict_option_with_code_in_it_is_data(session: Session, env: Env) -> None:
    marker = env.root / "pwned_pars"
    pars = {"max_iter": 2, "note": f"$(touch {marker})", "nested": {"q": "'\"`;"}}
    jid = session.dpu.run("ReadNoise", i="WFI", c="ccd50", p=repr(pars), C=1, return_jobid=True)
    view = session.dpu.wait(jid, timeout=30, interval=0.05)[0]
    assert view.counts.letters == (1, 0, 0, 0, 0)
    assert session.dpu._store.job(jid).options["pars"] == pars
    log = "\n".join(session.dpu.get_logs(jid))
    assert "Maximum number of iterations : 2" in log  # the parsed dict reached the task
    assert not marker.exists()


def test_a_lone_surrogate_is_refused_before_anything_is_recorded(session: Session) -> None:
    # Half a UTF-16 pair cannot be written as UTF-8 by the worker: refused at the prompt.
    with pytest.raises(OptionError, match=r"option 'm'/'message': .*holds a lone surrogate"):
        session.dpu.run("Null", m="half a pair: \ud800 end", C=1, return_jobid=True)
    assert session.dpu.get_jobids() == []
