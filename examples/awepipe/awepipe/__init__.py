"""A small real pipeline on synthetic data: the tasks the DPU demo and tests run."""
