"""PBS Pro, Torque and Grid Engine output parsing on samples written after their documentation
(tests/data), and the DRMAA mappings: no cluster needed."""
import logging
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path

import pytest

from dpu_slurm.config import DPUConfig
from dpu_slurm.errors import ConfigError
from dpu_slurm.schedulers import REGISTRY, SubmitRequest
from dpu_slurm.schedulers import drmaa as drmaa_mod
from dpu_slurm.schedulers.pbs import PBSScheduler, parse_alt, parse_full, split_id, walltime
from dpu_slurm.schedulers.ranges import as_seen
from dpu_slurm.schedulers.sge import SGEScheduler, parse_qacct, parse_xml, task_ids
from dpu_slurm.store import Job
from dpu_slurm.transport.local import LocalTransport

DATA = Path(__file__).parent / "data"


def job(job_id, natives, nproc, chunk=None, user="alice"):
    return Job(id=job_id, dpu="d", user=user, sequence="Null", options={},
               dpu_options={"chunk": chunk or nproc}, nproc=nproc, ntasks=1, phase="submitted",
               native_ids=natives, jobdir="/j", bundle="", error="", created=0.0, submitted=0.0,
               finished=None)


def cfg(scheduler="pbs", **kw):
    return DPUConfig(name="d", scheduler=scheduler, path=Path("d.yaml"), **kw)


def states(result, job_id):
    """Every process's (state, letter); queued ranges (ranges.Seen) written out."""
    seen = as_seen(result.get(job_id))
    return {i: (o.state, o.letter) for i, o in sorted(seen.expanded().items())}


# -- PBS ------------------------------------------------------------------------------------------

def test_pbs_state_table_covers_every_documented_state():
    assert set("QRECHWSTFXBMU") <= set(PBSScheduler.STATE_MAP)


def test_job_ids_of_both_dialects_split_into_number_index_and_array():
    assert split_id("1234[5].pbsserver") == ("1234", 5, True)
    assert split_id("1234[].pbsserve") == ("1234", None, True)
    assert split_id("4808.torque.example.") == ("4808", None, False)
    assert split_id("2440") == ("2440", None, False)


def test_pbspro_alternative_format_one_row_per_array():
    rows = list(parse_alt((DATA / "pbspro_qstat_u.txt").read_text()))
    assert rows[0] == ("1234[].pbsserve", "alice", "dpu.alice.", "B")
    assert [r[3] for r in rows] == ["B", "R", "H", "W", "M", "R"]
    sched = PBSScheduler(cfg(flavor="pbspro"), LocalTransport())
    jobs = [job(42, ["1234[].pbsserver"], 3), job(43, ["1235.pbsserver"], 1),
            job(44, ["1236[].pbsserver"], 2), job(45, ["1237.pbsserver"], 1), job(46, ["1238.pbsserver"], 1)]
    seen = sched.observations(jobs, iter(rows))
    # An array row says "alive": every process at least queued; its record tells if it started.
    assert states(seen, 42) == {0: ("QUEUED", ""), 1: ("QUEUED", ""), 2: ("QUEUED", "")}
    assert states(seen, 43) == {0: ("RUNNING", "")}
    assert states(seen, 44) == {0: ("QUEUED", ""), 1: ("QUEUED", "")}
    assert states(seen, 45) == {0: ("QUEUED", "")}
    assert states(seen, 46) == {0: ("ENDED", "U")}  # moved to another server
    assert 999 not in seen


def test_torque_alternative_format_subjob_rows_and_completed_jobs():
    rows = list(parse_alt((DATA / "torque_qstat_u.txt").read_text()))
    assert [r[3] for r in rows] == ["Q", "R", "C", "E"]
    sched = PBSScheduler(cfg(flavor="torque"), LocalTransport())
    jobs = [job(42, ["4807[].torque.example.org"], 2), job(43, ["4808.torque.example.org"], 1),
            job(44, ["4809.torque.example.org"], 1), job(45, ["4810[].torque.example.org"], 5)]
    seen = sched.observations(jobs, iter(rows))
    assert states(seen, 42) == {0: ("QUEUED", ""), 1: ("QUEUED", "")}
    assert states(seen, 43) == {0: ("RUNNING", "")}
    assert 44 not in seen, "a completed job: its worker record or qstat -f says how it ended"
    assert states(seen, 45) == {3: ("RUNNING", "")}  # an exiting subjob, by its index


def test_wrapper_rows_under_their_own_job_ids_are_matched_by_name():
    text = ("Job id              Name             Username        Time Use S Queue\n"
            "------------------- ---------------- --------------- -------- - ---------------\n")
    alt = ("2441                 root     debug    dpu.root.7           --         1     1     -- "
           "00:02 R 00:00\n")
    sched = PBSScheduler(cfg(), LocalTransport())
    seen = sched.observations([job(7, ["2440"], 3, user="root")], parse_alt(text + alt))
    assert states(seen, 7) == {0: ("QUEUED", ""), 1: ("QUEUED", ""), 2: ("QUEUED", "")}


def test_pbspro_full_history_gives_each_subjob_its_exit_status():
    blocks = parse_full((DATA / "pbspro_qstat_fxt.txt").read_text())
    assert blocks[0]["Variable_List"].endswith(  # a value continued on a tab-indented line
        "PBS_O_LOGNAME=alice,PBS_O_PATH=/usr/bin:/bin,PBS_O_QUEUE=workq")
    sched = PBSScheduler(cfg(flavor="pbspro"), LocalTransport())
    ended = sched.ended([job(42, ["1234[].pbsserver"], 4)], blocks)
    assert states(ended, 42) == {0: ("ENDED", "N"), 1: ("ENDED", "E"), 2: ("ENDED", "A"), 3: ("ENDED", "S")}
    assert ended[42][2].reason == "F: killed by signal 15"
    assert ended[42][1].reason == "F: exit status 1"


def test_torque_full_output_walltime_kill_is_A():
    blocks = parse_full((DATA / "torque_qstat_f.txt").read_text())
    sched = PBSScheduler(cfg(flavor="torque"), LocalTransport())
    jobs = [job(44, ["4809.torque.example.org"], 1), job(47, ["4812.torque.example.org"], 1),
            job(48, ["4813.torque.example.org"], 1)]
    ended = sched.ended(jobs, blocks)
    assert states(ended, 44) == {0: ("ENDED", "A")} and "walltime" in ended[44][0].reason
    assert states(ended, 47) == {0: ("ENDED", "N")}
    assert 48 not in ended, "a running job has not ended"


def test_unknown_pbs_state_is_U_with_a_warning(caplog):
    sched = PBSScheduler(cfg(), LocalTransport())
    with caplog.at_level(logging.WARNING):
        obs = sched.observe("Z")
    assert (obs.state, obs.letter) == ("ENDED", "U") and "unknown native state" in caplog.text


def test_pbs_array_flag_follows_the_flavor_and_directives_also_go_on_the_command_line():
    req = SubmitRequest(job_id=4, user="alice", dpu="d", sequence="Null", jobdir="/s/j", nproc=5,
                        time_limit=3601, mem=100, partition="workq", python="python3", pythonpath="/p")
    for flavor, flag in (("torque", "-t"), ("pbspro", "-J")):
        sched = PBSScheduler(cfg(flavor=flavor, max_array_size=4), LocalTransport())
        scripts = sched.scripts(req)
        assert f"#PBS {flag} 0-3\n" in scripts["job-0.sh"]
        assert f"#PBS {flag}" not in scripts["job-1.sh"], "one process: a plain job, no array"
        assert '"$(( 4 + task ))"' in scripts["job-1.sh"]
        args = sched.directive_args(scripts["job-0.sh"])
        assert args[args.index(flag) + 1] == "0-3" and "walltime=01:01:00" in args
    assert walltime(90) == "00:02:00" and walltime(86400 * 2) == "48:00:00"


def test_hostile_value_cannot_enter_a_pbs_directive():
    req = SubmitRequest(job_id=4, user="alice", dpu="d", sequence="Null", jobdir="/s/j", nproc=1,
                        time_limit=60, mem=100, partition="q; touch /tmp/x", python="python3",
                        pythonpath="/p")
    with pytest.raises(ValueError, match="cannot go into a scheduler directive"):
        PBSScheduler(cfg(), LocalTransport()).scripts(req)


# -- Grid Engine ----------------------------------------------------------------------------------

def test_sge_task_lists():
    assert task_ids("4") == [4]
    assert task_ids("1-10:3") == [1, 4, 7, 10]
    assert task_ids("3-9:2,10") == [3, 5, 7, 9, 10]


def test_sge_qstat_xml_maps_tasks_to_processes():
    rows = list(parse_xml((DATA / "sge_qstat.xml").read_text()))
    sched = SGEScheduler(cfg("sge"), LocalTransport())
    seen = sched.observations([job(42, ["17"], 10), job(43, ["18"], 1), job(44, ["19"], 2)], rows)
    assert states(seen, 42) == {0: ("RUNNING", ""), 1: ("RUNNING", ""), 2: ("QUEUED", ""),
                                4: ("QUEUED", ""), 6: ("QUEUED", ""), 8: ("QUEUED", ""),
                                9: ("QUEUED", "")}
    assert states(seen, 43) == {0: ("ENDED", "E")} and "qstat -j 18" in seen[43][0].reason
    assert states(seen, 44) == {0: ("QUEUED", ""), 1: ("QUEUED", "")}


def test_sge_accounting_records_give_N_E_A():
    records = list(parse_qacct((DATA / "sge_qacct.txt").read_text()))
    assert len(records) == 4 and records[2]["failed"].startswith("37")
    from dpu_slurm.schedulers.sge import accounting_observation
    letters = [accounting_observation(r).letter for r in records[:3]]
    assert letters == ["N", "E", "A"]


def test_sge_state_table_covers_the_documented_states():
    documented = ["qw", "hqw", "hRwq", "r", "t", "Rr", "Rt", "s", "ts", "S", "tS", "T", "tT", "Rs",
                  "Rts", "RS", "RtS", "RT", "RtT", "Eqw", "Ehqw", "EhRqw", "dr", "dt", "dRr", "dRt",
                  "ds", "dS", "dT", "dRs", "dRS", "dRT"]
    sched = SGEScheduler(cfg("sge"), LocalTransport())
    assert all(s.upper() in sched.STATE_MAP for s in documented)
    assert sched.observe("qw").state == "QUEUED" and sched.observe("Rr").state == "RUNNING"


# -- DRMAA ----------------------------------------------------------------------------------------

def drmaa_request(partition=None):
    return SubmitRequest(job_id=4, user="alice", dpu="d", sequence="Null", jobdir="/s/j", nproc=3,
                         time_limit=3000, mem=1500, partition=partition, python="python3", pythonpath="/p")


def test_native_specification_in_each_drm_syntax():
    assert drmaa_mod.native_spec(cfg("sge", account="astro"), drmaa_request("short")) == \
        "-l h_rt=00:50:00,h_vmem=1500M -q short -A astro"
    assert drmaa_mod.native_spec(cfg("slurm", qos="normal"), drmaa_request("short")) == \
        "--time=50 --mem=1500M --partition=short --qos=normal"
    assert drmaa_mod.native_spec(cfg("pbs", extra_directives=["-W group_list=x"]), drmaa_request()) == \
        "-l walltime=00:50:00,mem=1500mb -W group_list=x"
    with pytest.raises(ConfigError, match="directive"):
        drmaa_mod.native_spec(cfg("sge"), drmaa_request("a b"))


def test_every_drmaa_state_is_mapped():
    # The PyPI package's own state names, from its const module alone (importing the package
    # would load libdrmaa into this process).
    origin = Path(find_spec("drmaa").origin).with_name("const.py")
    spec = spec_from_file_location("drmaa_const", origin)
    const = module_from_spec(spec)
    spec.loader.exec_module(const)
    names = [v for k, v in vars(const.JobState).items() if not k.startswith("_")]
    assert len(names) == 11
    assert {n.upper() for n in names} == set(drmaa_mod.STATE_MAP)


def test_drmaa_job_info_maps_to_letters():
    info = drmaa_mod.info_observation
    assert info({"hasExited": True, "exitStatus": 0}).letter == "N"
    assert info({"hasExited": True, "exitStatus": 2}).letter == "E"
    assert info({"hasExited": True, "exitStatus": 137}).letter == "A"
    assert info({"hasSignal": True, "terminatedSignal": "SIGKILL"}).letter == "A"
    assert info({"wasAborted": True}).letter == "S"
    # Each DRM's registered class knows its task ids (DRMAA takes them from the registry).
    assert REGISTRY["sge"].drmaa_array_id("12.3") == "12"
    assert REGISTRY["slurm"].drmaa_array_id("12_3") == "12"
    assert REGISTRY["pbs"].drmaa_array_id("12[3].server") == "12[].server"


def test_helper_environment_carries_the_tls_workaround_and_library(monkeypatch, tmp_path):
    lib = tmp_path / "libdrmaa.so.1.0"
    lib.write_bytes(b"")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    env = drmaa_mod.helper_env(cfg("sge", drmaa_library=str(lib)))
    assert env["GLIBC_TUNABLES"] == drmaa_mod.TLS_TUNABLE and env["DRMAA_LIBRARY_PATH"] == str(lib)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    env = drmaa_mod.helper_env(cfg("sge", drmaa_library=str(lib)))
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{drmaa_mod.TLS_TUNABLE}"


def test_drmaa_needs_a_drm_it_knows():
    with pytest.raises(ConfigError, match="slurm, pbs or sge"):
        drmaa_mod.DRMAAScheduler(cfg("local", submit="drmaa"), LocalTransport())
