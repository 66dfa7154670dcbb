#!/bin/bash
# dpu_slurm job 42, processes 0..2499, a DRMAA bulk job
# Resources travel in the DRMAA job template's native specification, not in this script.
set -u
export PYTHONPATH=/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code"${PYTHONPATH:+:$PYTHONPATH}"
export DPU_JOB_ID=42
export DPU_TIME_LIMIT=900
# The bulk index (1-based) as the DRM names it: Grid Engine, Slurm, Torque, PBS Pro.
task=${SGE_TASK_ID:-${SLURM_ARRAY_TASK_ID:-${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-1}}}}
exec /usr/bin/python3 -m dpu_slurm.worker /scratch/alice/dpu/jobs/42.abcd1234 "$(( 0 + task - 1 ))"
