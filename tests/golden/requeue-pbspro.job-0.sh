#!/bin/bash
# dpu_slurm job 42, processes 0..2499
#PBS -N dpu.alice.42.abcd1234.0
#PBS -l walltime=00:15:00
#PBS -l select=1:ncpus=1:mem=2000mb
#PBS -J 0-2499%100
#PBS -j oe
#PBS -o /scratch/alice/dpu/jobs/42.abcd1234/out/job-0.out
#PBS -q short
#PBS -A astro
#PBS -r n
#PBS -l place=pack
set -u
module load awe/master
export OMP_NUM_THREADS=1
export PYTHONPATH=/scratch/alice/dpu/bundles/0123/worker:/scratch/alice/dpu/bundles/0123/code"${PYTHONPATH:+:$PYTHONPATH}"
export DPU_JOB_ID=42
export DPU_TIME_LIMIT=900
export DPU_REQUEUE='' DPU_REQUEUE_MAX=2
export DPU_REQUEUE_WARN=120
# The array index: Torque sets PBS_ARRAYID, PBS Pro PBS_ARRAY_INDEX, Slurm's Torque wrappers
# SLURM_ARRAY_TASK_ID; none of them in a plain (one-process) job.
task=${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-0}}}
exec python3 -m dpu_slurm.worker /scratch/alice/dpu/jobs/42.abcd1234 "$(( 0 + task ))"
