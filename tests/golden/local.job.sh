#!/bin/bash
# dpu_slurm job 42 on the local DPU
set -u
export PYTHONPATH=/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code"${PYTHONPATH:+:$PYTHONPATH}"
export DPU_JOB_ID=42
export DPU_TIME_LIMIT=900
exec python3 -m dpu_slurm.worker /scratch/alice/dpu/jobs/42.abcd1234 "$1"
