#!/usr/bin/env bash
# The Torque wrappers run no daemon of their own: nothing to stop (SLURM is stopped by
# harness/slurm-down.sh). Kept so `make cluster-down` has one line per harness script.
# `--purge` removes the unpacked wrappers.
set -euo pipefail
DIR=${TORQUE_DIR:-/opt/dpu-torque}
if [[ ${1:-} == --purge ]]; then
    rm -rf "$DIR"
    echo "torque-down: OK removed $DIR"
else
    echo "torque-down: OK nothing to stop (wrappers in $DIR left in place)"
fi
