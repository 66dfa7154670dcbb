#!/bin/bash
# dpu_slurm job 42, processes 0..999
#$ -N dpu.alice.42.abcd1234.0
#$ -t 1-1000
#$ -l h_rt=00:15:00,h_vmem=2000M
#$ -q short
#$ -S /bin/bash
#$ -j y
#$ -o /scratch/alice/dpu/jobs/42.abcd1234/out/
#$ -notify
#$ -r y
set -u
export PYTHONPATH=/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code"${PYTHONPATH:+:$PYTHONPATH}"
export DPU_JOB_ID=42
export DPU_TIME_LIMIT=900
export DPU_REQUEUE=sge DPU_REQUEUE_MAX=2
export DPU_REQUEUE_WARN=120
exec python3 -m dpu_slurm.worker /scratch/alice/dpu/jobs/42.abcd1234 "$(( 0 + SGE_TASK_ID - 1 ))"
