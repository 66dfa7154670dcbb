"""The HOW-TO's AWE session, for real, on the embedded local DPU (run by `make demo`).

Lists the sequences and options, submits ReadNoise for the 8 CCDs of WFI, waits, and reads back
the status counters, a log and the committed results.
"""
import os
import sys
from pathlib import Path

from dpu_slurm import Processor

out = Path(__file__).resolve().parent.parent / "demo-output"
out.mkdir(exist_ok=True)
os.chdir(out)  # the session's log file (YYYYmmdd_HHMMSS.log) lands here

dpu = Processor("local")
print("awe> dpu.get_sequence_identifiers()")
print(dpu.get_sequence_identifiers())
print("\nawe> dpu.get_sequence_options('HotPixels')")
print(dpu.get_sequence_options("HotPixels"))
print("\nawe> dpu.show_sequence_options('HotPixels')")
dpu.show_sequence_options("HotPixels")
print("\nawe> dpu.run('ReadNoise', i='WFI', d='2000-04-28', C=1)")
jobid = dpu.run("ReadNoise", i="WFI", d="2000-04-28", C=1, return_jobid=True)
print("\nawe> dpu.get_status()")
dpu.get_status(jobid)
views = dpu.wait(jobid, timeout=300, interval=0.5)
print("\nawe> dpu.get_status()   # a moment later")
dpu.get_status(jobid)
print(f"\nawe> dpu.get_logs({jobid})")
dpu.get_logs(jobid)
print(f"\nawe> dpu.get_job_result({jobid})")
for obj in dpu.get_job_result(jobid):
    print(f"  {obj['chip']}: read noise {obj['read_noise']:.2f} ADU")
print(f"\nThe session log is {dpu.session_log}; try `.venv/bin/dpu status {jobid}` or `.venv/bin/dpu shell`.")
sys.exit(0 if views[0].ok else 1)
