#!/bin/bash
# dpu_slurm job 42, processes 0..999
#SBATCH --job-name=dpu.alice.42.abcd1234.0
#SBATCH --array=0-999%200
#SBATCH --time=00:15:00
#SBATCH --mem=2000M
#SBATCH --ntasks=1
#SBATCH --output=out/%A_%a.out
#SBATCH --partition=short
#SBATCH --account=astro
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --constraint=avx2
set -u
module load awe/master
export OMP_NUM_THREADS=1
export PYTHONPATH=/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code"${PYTHONPATH:+:$PYTHONPATH}"
export DPU_JOB_ID=42
export DPU_TIME_LIMIT=900
export DPU_REQUEUE=slurm DPU_REQUEUE_MAX=3
export DPU_REQUEUE_WARN=90
exec python3 -m dpu_slurm.worker /scratch/alice/dpu/jobs/42.abcd1234 "$(( 0 + SLURM_ARRAY_TASK_ID ))"
