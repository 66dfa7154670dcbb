"""Cluster configs: validation with file:line errors, the search path, dpu_name."""
from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from dpu_slurm import cli
from dpu_slurm.config import (
    SCHEMA,
    default_dpu_name,
    discover,
    environment_file,
    get_dpu,
    load_file,
    packaged,
    search_path,
)
from dpu_slurm.errors import ConfigError
from dpu_slurm.processor import Processor
from tests.conftest import Env

# The shape DESIGN.md promises sysadmins.
DESIGN_EXAMPLE = """\
name: groningen                 # what select_dpu() / DPU_NAME / --dpu use
description: Groningen cluster (SLURM)
scheduler: slurm
submit: cli
host:
  hostname: login.example.org
  port: 22
  user: alice
  identity_file: ~/.ssh/id_ed25519
  known_hosts: ~/.ssh/known_hosts
workdir: /scratch/{user}/dpu
python: python3
awe_versions:
  master: {setup: ["module load awe/master"]}
  develop: {setup: ["module load awe/develop"]}
defaults: {time: 600, mem: 2000}
partitions:
  - {name: short, max_time: 3600, max_mem: 4000}
  - {name: long, max_time: 86400, max_mem: 16000}
max_array_size: 1000
extra_directives: ["--qos=normal"]
"""


def at(path: Path, line: int) -> str:
    """A regex for the start of an error at path:line."""
    return "^" + re.escape(f"{path}:{line}: ")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_design_example_loads(tmp_path: Path) -> None:
    cfg = load_file(write(tmp_path, "g.yaml", DESIGN_EXAMPLE))
    assert (cfg.name, cfg.scheduler, cfg.submit) == ("groningen", "slurm", "cli")
    assert cfg.host is not None and cfg.host["hostname"] == "login.example.org" and cfg.host["port"] == 22
    assert cfg.is_remote
    assert [p["name"] for p in cfg.partitions] == ["short", "long"]
    assert cfg.awe_versions["develop"]["setup"] == ["module load awe/develop"]
    assert cfg.target_workdir() == "/scratch/alice/dpu"


def test_packaged_local_dpu_is_valid_and_is_the_default(env: Env) -> None:
    cfg = load_file(packaged("cluster_configs") / "local.yaml")
    assert (cfg.name, cfg.scheduler, cfg.host) == ("local", "local", None)
    assert default_dpu_name() == "local"
    assert get_dpu("local").path == cfg.path
    # its jobs live under DPU_HOME, never in the user's real home
    assert cfg.target_workdir() == str(env.home / "work" / "local")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nscheduler: local\nslots: [1, 2\nworkdir: /w\n")
    with pytest.raises(ConfigError) as err:
        load_file(path)
    assert str(err.value).startswith(f"{path}:")
    line = int(str(err.value).split(":")[1])
    assert line in (3, 4)  # the parser notices at the unclosed list or just after it
    assert "malformed YAML" in str(err.value)


def test_unknown_key_names_file_line_key_and_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nscheduler: local\nslotz: 2\n")
    with pytest.raises(ConfigError) as err:
        load_file(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: key 'slotz': unknown key; allowed here: ")
    allowed = text.split("allowed here: ")[1].split(", ")
    assert allowed == list(SCHEMA)


def test_unknown_nested_key_names_its_path_and_the_nested_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nscheduler: slurm\nhost:\n  hostnme: h\n")
    with pytest.raises(ConfigError, match=at(path, 4) + r"key 'host.hostnme': unknown key; "
                                          r"allowed here: hostname, port, user"):
        load_file(path)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nscheduler: local\nslots: many\n")
    with pytest.raises(ConfigError, match=at(path, 3) + r"slots: must be an integer, got 'many'$"):
        load_file(path)


def test_wrong_type_inside_a_list_names_the_item(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", """\
        name: x
        scheduler: slurm
        partitions:
          - {name: a, max_time: 10}
          - {name: b, max_time: soon}
    """)
    with pytest.raises(ConfigError, match=at(path, 5) + r"partitions\[1\]\.max_time: must be an integer"):
        load_file(path)


def test_enum_lists_the_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nscheduler: foo\n")
    allowed = r"scheduler: is 'foo'; allowed: local, slurm, pbs, sge$"
    with pytest.raises(ConfigError, match=at(path, 2) + allowed):
        load_file(path)


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing key 'scheduler'"):
        load_file(write(tmp_path, "bad.yaml", "name: x\n"))
    with pytest.raises(ConfigError, match=r"host: missing key 'hostname'"):
        load_file(write(tmp_path, "bad2.yaml", "name: x\nscheduler: slurm\nhost: {port: 22}\n"))


def test_key_given_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":3: key 'name': given twice"):
        load_file(write(tmp_path, "bad.yaml", "name: x\nscheduler: local\nname: y\n"))


@pytest.mark.parametrize("text", ["", "- just\n- a list\n",
                                  "name: !!python/name:os.system\nscheduler: local\n"])
def test_empty_list_or_tagged_files_are_config_errors(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_file(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "absent.yaml")


def test_dpu_config_path_comes_before_the_packaged_configs(env: Env, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    second = tmp_path / "second"
    second.mkdir()
    write(second, "local.yaml", "name: local\nscheduler: local\ndescription: from second\n")
    write(env.config, "local.yaml", "name: local\nscheduler: local\ndescription: from first\n")
    monkeypatch.setenv("DPU_CONFIG_PATH", f"{env.config}:{second}")
    assert search_path()[:2] == [env.config, second]
    assert search_path()[-1] == packaged("cluster_configs")
    assert get_dpu("local").description == "from first"
    (env.config / "local.yaml").unlink()
    assert get_dpu("local").description == "from second"
    monkeypatch.setenv("DPU_CONFIG_PATH", "")
    assert get_dpu("local").path == packaged("cluster_configs") / "local.yaml"


def test_a_broken_file_does_not_hide_the_other_dpus(env: Env) -> None:
    env.write_dpu("good")
    write(env.config, "broken.yaml", "name: broken\nscheduler: local\nslots: many\n")
    dpus, problems = discover()
    assert {"good", "local"} <= set(dpus)
    assert len(problems) == 1 and "slots" in problems[0]
    with pytest.raises(ConfigError, match=r"broken\.yaml:3: slots"):  # the user meant that file
        get_dpu("broken")


def test_a_broken_file_is_reported_only_for_the_dpu_it_declares(env: Env) -> None:
    write(env.config, "zzz.yaml", "name: zzz\nscheduler: foo\n")
    write(env.config, "other.yaml", "name: mydpu   # the cluster\nscheduler: slurm\nslots: x\n")
    with pytest.raises(ConfigError, match="unknown DPU 'z'; known DPUs: local"):
        get_dpu("z")  # 'z' occurs in zzz.yaml's error, but that file is not about DPU 'z'
    with pytest.raises(ConfigError, match=r"other\.yaml:3: slots"):
        get_dpu("mydpu")


def test_workdir_placeholders_are_checked_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", "name: x\nscheduler: local\nworkdir: /data/{project}/dpu\n")
    with pytest.raises(ConfigError, match=at(path, 3) + r"workdir: .*\{project\}.*allowed: \{user\}"):
        load_file(path)
    ok = load_file(write(tmp_path, "ok.yaml", "name: x\nscheduler: local\nworkdir: /d/{user}/{name}\n"))
    assert ok.target_workdir().endswith("/x")


def test_folders_with_a_colon_are_refused_because_pythonpath_cannot_carry_them(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: x\nscheduler: local\nworkdir: /data/a:b\n")
    with pytest.raises(ConfigError, match=at(path, 3) + "workdir: '/data/a:b' holds a ':'"):
        load_file(path)
    path = write(tmp_path, "v.yaml", "name: x\nscheduler: local\nawe_versions:\n  m: {path: /o:pt}\n")
    with pytest.raises(ConfigError, match=at(path, 4) + "awe_versions.m.path: '/o:pt' holds a ':'"):
        load_file(path)


def test_unknown_dpu_name_lists_the_known_ones(env: Env) -> None:
    env.write_dpu("testlocal")
    with pytest.raises(ConfigError, match=r"unknown DPU 'nosuch'; known DPUs: local, testlocal"):
        get_dpu("nosuch")
    with pytest.raises(ConfigError, match="known DPUs: local, testlocal"):
        Processor("nosuch", session_log=False)


def test_dpu_name_env_chooses_the_default_dpu(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_dpu("testlocal")
    monkeypatch.setenv("DPU_NAME", "testlocal")
    dpu = Processor(session_log=False)
    assert dpu.dpu_name == "testlocal"
    dpu.close()


def test_select_dpu_persist_writes_the_environment_file(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    env.write_dpu("testlocal")
    dpu = Processor(session_log=False)
    assert dpu.dpu_name == "local"
    assert dpu.select_dpu("testlocal") == "testlocal"
    assert dpu.dpu_name == "testlocal"
    assert not environment_file().exists()  # without persist only this session changes
    dpu.select_dpu("testlocal", persist=True)
    assert environment_file().parent == env.home
    assert yaml.safe_load(environment_file().read_text())["dpu_name"] == "testlocal"
    assert "Selected DPU testlocal (saved as your default)" in capsys.readouterr().out
    dpu.close()
    again = Processor(session_log=False)
    assert again.dpu_name == "testlocal"
    again.close()
    monkeypatch.setenv("DPU_NAME", "local")  # the environment variable wins over the file
    assert default_dpu_name() == "local"


def test_select_unknown_dpu_keeps_the_current_one(env: Env) -> None:
    dpu = Processor(session_log=False)
    with pytest.raises(ConfigError, match="unknown DPU 'nosuch'"):
        dpu.select_dpu("nosuch", persist=True)
    assert dpu.dpu_name == "local"
    assert not environment_file().exists()
    dpu.close()


def test_broken_environment_file_is_a_config_error(env: Env) -> None:
    environment_file().parent.mkdir(parents=True, exist_ok=True)
    environment_file().write_text("[not, a, mapping]\n")
    with pytest.raises(ConfigError, match=r"environment\.yaml: must be a mapping"):
        default_dpu_name()


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "g.yaml", DESIGN_EXAMPLE)
    bad = write(tmp_path, "b.yaml", "name: x\nscheduler: foo\n")
    assert cli.main(["config", "check", str(good)]) == 0
    assert "ok (DPU groningen, scheduler slurm)" in capsys.readouterr().out
    assert cli.main(["config", "check", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: scheduler: is 'foo'" in err
    assert cli.main(["config", "check", "--json", str(good), str(bad)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in report] == [True, False]
    assert report[0]["dpu"] == "groningen" and "allowed: local" in report[1]["error"]


# -- issue 10: broken files are skipped, bad values refused, what passes the check renders --------
def test_a_latin1_config_file_is_skipped_with_one_warning_and_local_still_runs(
        env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    (env.config / "latin.yaml").write_bytes(b"name: latin\nscheduler: local\n# caf\xe9 au lait\n")
    env.write_dpu()
    assert cli.main(["run", "--dpu", "testlocal", "--wait", "--timeout", "60", "Null"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "latin.yaml" in r.getMessage()]
    assert len(warnings) == 1 and "latin.yaml:3: not UTF-8 (byte 0xe9)" in warnings[0]
    capsys.readouterr()
    assert cli.main(["status", "--dpu", "latin"]) == 2  # asked for by name: the full error
    assert "latin.yaml:3: not UTF-8 (byte 0xe9); save the DPU file as UTF-8" in capsys.readouterr().err


def test_a_list_as_a_key_is_an_error_with_file_and_line(env: Env) -> None:
    path = write(env.config, "lk.yaml", "name: lk\nscheduler: local\n? [a, b]\n: 1\n")
    with pytest.raises(ConfigError, match=at(path, 3) + "a key must be a plain value, not a list"):
        load_file(path)
    dpus, problems = discover()  # the other DPUs keep working
    assert "local" in dpus and len(problems) == 1


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "d.yaml", "name: x\nscheduler: local\nslots: 2\nslots: 4\n")
    with pytest.raises(ConfigError, match=at(path, 4) + r"key 'slots': given twice \(lines 3 and 4\)"):
        load_file(path)


def test_aliases_are_refused_so_an_alias_bomb_ends_at_once(tmp_path: Path) -> None:
    rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]'] + [
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    path = write(tmp_path, "bomb.yaml", "name: x\nscheduler: local\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=at(path, 3) + r"this value is used again through an alias"):
        load_file(path)


@pytest.mark.parametrize(("line", "message"), [
    ('account: "astro group"', "account: 'astro group' is not allowed; allowed: letters, digits and _.+-"),
    ('account: "acct;id"', "account: 'acct;id' is not allowed; allowed: letters, digits and _.+-"),
    ('qos: "normal --x"', "qos: 'normal --x' is not allowed"),
    ("slots: -1", "slots: -1 is out of range; allowed: >= 1"),
    ("max_array_size: 0", "max_array_size: 0 is out of range; allowed: >= 1"),
    ('extra_directives: ["--comment=ok\\ntouch /tmp/x"]', r"extra_directives[0]: '--comment=ok\ntouch "
                                                        "/tmp/x' holds a newline"),
    ('extra_directives: ["touch /tmp/x"]', "extra_directives[0]: 'touch /tmp/x' is not allowed; "
                                           "allowed: a directive starting with '-'"),
    ("defaults: {time: 600, mem: .inf}", "defaults.mem: must be an integer, got inf"),
    ("time_factor: .nan", "time_factor: must be a finite number, got nan"),
    ("poll: {min_interval: -1}", "poll.min_interval: -1 is out of range"),
    ('env: {"BAD KEY": "1"}', "env.BAD KEY: 'BAD KEY' is not allowed; allowed: a shell variable name"),
    ('python: "python3 -u"', "python: 'python3 -u' is not allowed; allowed: a command name or path"),
    ("bin_dir: opt/bin", "bin_dir: 'opt/bin' is not allowed; allowed: an absolute path"),
    ('awe_versions: {m: {setup: ["module load a\\u0000b"]}}', "awe_versions.m.setup[0]: "),
    ("workdir: relative/dir", "workdir: 'relative/dir' is relative"),
])
def test_values_that_reach_a_script_are_checked_by_config_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str) -> None:
    path = write(tmp_path, "s.yaml", f"name: s\nscheduler: slurm\n{line}\n")
    assert cli.main(["config", "check", str(path)]) == 2
    assert f"{path}:3: {message}" in capsys.readouterr().err


def test_a_workdir_with_a_space_is_refused_for_sge_and_pbs_not_for_slurm(tmp_path: Path) -> None:
    for scheduler in ("sge", "pbs"):
        path = write(tmp_path, f"{scheduler}.yaml",
                     f"name: x\nscheduler: {scheduler}\nworkdir: /data/my jobs\n")
        with pytest.raises(ConfigError, match=at(path, 3) + rf"workdir: '/data/my jobs' cannot go into "
                                                            rf"a {scheduler} '-o' directive"):
            load_file(path)
    assert load_file(write(tmp_path, "sl.yaml", "name: x\nscheduler: slurm\nworkdir: /data/my jobs\n"))


def test_config_check_reports_every_broken_file_and_renders_a_script_per_good_dpu(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    for example in ("example-slurm.yaml", "example-pbspro.yaml", "example-sge-drmaa.yaml"):
        text = (packaged("cluster_configs") / example).read_text()
        (env.config / example.replace("example-", "")).write_text(text)
    write(env.config, "broken.yaml", "name: broken\nscheduler: slurm\naccount: a b\n")
    (env.config / "latin.yaml").write_bytes(b"name: latin\nscheduler: local\n# \xe9\n")
    assert cli.main(["config", "check", "--json"]) == 2  # no files: the whole search path
    report = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    broken = report["broken.yaml"]
    assert not broken["ok"] and "broken.yaml:3: account: 'a b' is not allowed" in broken["error"]
    assert not report["latin.yaml"]["ok"] and "not UTF-8" in report["latin.yaml"]["error"]
    assert report["slurm.yaml"]["rendered"] == ["develop/job-0.sh", "master/job-0.sh"]
    assert report["pbspro.yaml"]["rendered"] == ["master/job-0.sh"]
    assert report["sge-drmaa.yaml"]["rendered"] == ["job-0.sh", "nativeSpecification"]
    assert report["local.yaml"]["ok"]


def test_a_script_that_does_not_render_fails_the_check_naming_dpu_and_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dpu_slurm import render
    path = write(tmp_path, "g.yaml", DESIGN_EXAMPLE)
    # A stricter directive filter than the schema (as a scheduler with a smaller alphabet would be).
    strict = render.directive

    def no_dots(value: object) -> render.Raw:
        if "." in str(value):
            raise ValueError(f"{str(value)!r} cannot go into a scheduler directive")
        return strict(value)

    render.environment.cache_clear()
    monkeypatch.setattr(render, "directive", no_dots)
    try:
        assert cli.main(["config", "check", str(path)]) == 2
    finally:
        render.environment.cache_clear()
    err = capsys.readouterr().err
    assert f"{path}: DPU 'groningen': a trial job script does not render" in err


@pytest.mark.parametrize("key, value", [
    ("workdir", "/d/{dpu_home.__init__.__globals__}"),   # AttributeError from str.format
    ("job_index", "/d/{dpu_home.__init__.__globals__}"),
    ("workdir", "/d/{dpu_home.parent}/x"),               # attribute access: not a placeholder
    ("job_index", "/d/{name[0]}"),
    ("workdir", "/d/{user!r}"),
])
def test_a_placeholder_with_attributes_is_a_clear_error_and_hides_no_other_dpu(
        env: Env, key: str, value: str) -> None:
    env.write_dpu("good")
    path = write(env.config, "odd.yaml", f"name: odd\nscheduler: local\n{key}: {json.dumps(value)}\n")
    dpus, problems = discover()
    assert {"good", "local"} <= set(dpus)
    assert len(problems) == 1 and f"{key}: " in problems[0] and "placeholder" in problems[0]
    with pytest.raises(ConfigError, match=at(path, 3) + f"{key}: "):
        get_dpu("odd")


def test_config_check_says_when_an_existing_workdir_could_be_changed_by_others(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """What passes the check can be submitted: a submit refuses such a workdir (see
    tests/test_users.py), so the check says so first, with the folder and the reason."""
    shared = env.root / "scratch"
    shared.mkdir()
    os.chmod(shared, 0o777)   # not sticky: anyone may rename or replace what is in it
    path = env.write_dpu("open", workdir=str(shared / "dpu"))
    (shared / "dpu").mkdir()
    assert cli.main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert (f"the workdir {shared / 'dpu'} is not safe for your jobs: {shared} is writable by "
            "other users") in err
    os.chmod(shared, 0o755)
    assert cli.main(["config", "check", str(path)]) == 0
