"""PBS Pro polled by `qstat -f -F json` (its history with -x -t), Torque by `qstat -x` (XML), the
text forms only as a fallback: samples written after the documented formats (tests/data)."""
import os
import stat
from pathlib import Path

from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.pbs import PBSScheduler, parse_any
from dpu_slurm.schedulers.ranges import as_seen
from dpu_slurm.store import Job
from dpu_slurm.transport.base import Completed, Gathered
from dpu_slurm.transport.local import LocalTransport

DATA = Path(__file__).parent / "data"


def job(job_id, natives, nproc, phase="submitted", user="alice"):
    return Job(id=job_id, dpu="d", user=user, sequence="Null", options={},
               dpu_options={"chunk": nproc, "store": "s1"}, nproc=nproc, ntasks=1, phase=phase,
               native_ids=natives, jobdir="/j", bundle="", error="", created=0.0, submitted=0.0,
               finished=None)


def sched(flavor, **kw):
    cfg = DPUConfig(name="d", scheduler="pbs", flavor=flavor, path=Path("d.yaml"),
                    host={"hostname": "h", "user": "alice"}, **kw)
    return PBSScheduler(cfg, LocalTransport())


def polled(text, code=0):
    return Gathered(Completed(["qstat"], code, text, ""), {}, {})


def states(result, job_id):
    """Every process's (state, letter); queued ranges (ranges.Seen) written out."""
    seen = as_seen(result.get(job_id))
    return {i: (o.state, o.letter) for i, o in sorted(seen.expanded().items())}


def test_pbspro_is_polled_with_json_and_its_history_with_x():
    s = sched("pbspro")
    assert s.poll_request([job(42, ["1234[].pbsserver"], 3)] * 5).argv == ["qstat", "-f", "-F", "json"]
    assert s.history_request([job(42, ["1234[].pbsserver"], 3)]) == \
        ["qstat", "-f", "-F", "json", "-x", "-t", "1234[].pbsserver"]


def test_pbspro_json_poll_gives_states_and_whole_names_of_own_jobs():
    s = sched("pbspro")
    jobs = [job(42, ["1234[].pbsserver"], 3), job(43, ["1235.pbsserver"], 1), job(44, ["1236.pbsserver"], 1)]
    seen = s.parse_poll(jobs, polled((DATA / "pbspro_qstat_f_json.json").read_text()))
    assert states(seen, 42) == {0: ("QUEUED", ""), 1: ("QUEUED", ""), 2: ("QUEUED", "")}  # array alive
    assert states(seen, 43) == {0: ("RUNNING", "")}
    assert states(seen, 44) == {0: ("QUEUED", "")}
    assert s.names == {"dpu.alice.42.s1.0": "1234[].pbsserver", "dpu.alice.43.s1.0": "1235.pbsserver",
                       "dpu.alice.44.s1.0": "1236.pbsserver"}, "bob's job is not ours"


def test_pbspro_json_history_gives_each_subjob_its_exit_status():
    s = sched("pbspro")
    res = Completed(["qstat"], 0, (DATA / "pbspro_qstat_fxt_json.json").read_text(), "")
    ended = s.parse_history([job(42, ["1234[].pbsserver"], 4)], res)
    assert states(ended, 42) == {0: ("ENDED", "N"), 1: ("ENDED", "E"), 2: ("ENDED", "A"), 3: ("ENDED", "S")}
    assert ended[42][2].reason == "X: killed by signal 15"


def test_torque_xml_poll_and_history():
    s = sched("torque")
    text = (DATA / "torque_qstat_x.xml").read_text()
    jobs = [job(42, ["4807[].torque.example.org"], 2), job(43, ["4808.torque.example.org"], 1),
            job(44, ["4809.torque.example.org"], 1), job(47, ["4812.torque.example.org"], 1)]
    seen = s.parse_poll(jobs, polled(text))
    assert states(seen, 42) == {0: ("QUEUED", ""), 1: ("QUEUED", "")}
    assert states(seen, 43) == {0: ("RUNNING", "")}
    assert 44 not in seen and 47 not in seen, "completed: the record or the history says how"
    assert "something.else" not in s.names and s.names["dpu.alice.47.s1.0"] == "4812.torque.example.org"
    ended = s.parse_history(jobs, Completed(["qstat"], 0, text, ""))
    assert states(ended, 44) == {0: ("ENDED", "A")} and "walltime" in ended[44][0].reason
    assert states(ended, 47) == {0: ("ENDED", "N")}


def test_the_text_forms_still_parse_as_the_fallback():
    assert parse_any((DATA / "torque_qstat_u.txt").read_text()) is None  # the alternative format
    blocks = parse_any((DATA / "torque_qstat_f.txt").read_text())
    assert blocks and all("Job Id" in b for b in blocks)


def test_torque_without_xml_falls_back_to_text_in_the_same_call(tmp_path):
    """Slurm's Torque wrappers refuse -x: the one poll command then runs the text form."""
    fake = tmp_path / "qstat"
    fake.write_text('#!/bin/sh\n[ "$1" = "-x" ] && { echo "Unknown option: x" >&2; exit 2; }\n'
                    'echo "Job Id: 77"; echo "    Job_Name = dpu.alice.9.s1.0"\n'
                    'echo "    Job_Owner = alice@h"; echo "    job_state = R"; echo "ARGS $*" >&2\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    s = sched("torque", bin_dir=str(tmp_path))
    request = s.poll_request([job(9, [], 1, phase="recorded")])
    got = LocalTransport().gather(request.argv, [], {}, "status.json")
    assert got.completed is not None and "ARGS -f" in got.completed.stderr
    assert states(s.parse_poll([job(9, ["77"], 1)], got), 9) == {0: ("RUNNING", "")}
    assert s.names == {"dpu.alice.9.s1.0": "77"}
    assert os.path.basename(request.argv[0]) == "sh", "one command line: one round trip"
