"""`make bench`: every benchmark, figures printed (never asserted)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
status = 0
for script in ("slurm_bench.py", "ssh_bench.py", "drmaa_bench.py", "bulk_bench.py", "web_bench.py"):
    print(f"== {script}", flush=True)
    status |= subprocess.run([sys.executable, str(HERE / script)], check=False).returncode
sys.exit(status)
