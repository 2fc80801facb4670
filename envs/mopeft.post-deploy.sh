#!/usr/bin/env bash
# Run by Snakemake inside a newly created conda env of envs/mopeft.yaml (--sdm conda), from the
# workflow's working directory, i.e. the checkout: the lock's exact versions, then mopeft itself.
set -euo pipefail
python -m pip install -r requirements/lock-linux-x86_64-py311.txt
python -m pip install --no-deps -e .
