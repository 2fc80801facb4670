#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm) + munge, only when missing.
#
# Why: tests/test_slurm.py runs the demo DAG through profiles/slurm against a throw-away local
# cluster (tests/slurm_cluster.py). The daemons come from the distribution, so this is the only
# setup step; it is idempotent (nothing is downloaded when the binaries are already there) so CI
# can call it unconditionally. Needs root + apt-get; prints a reason and exits 0 otherwise, and
# the SLURM test then skips with that reason.
set -euo pipefail

have_all() {
    command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1
}

# `sbatch --version` would look for a controller config (DNS SRV lookup); ask dpkg instead.
version() { dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm 2>/dev/null || echo "slurm (not from dpkg)"; }

if have_all; then
    echo "install_slurm: slurm + munge already installed ($(version))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_slurm: not root, cannot install slurm-wlm/munge (the SLURM test will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm: no apt-get (not Debian/Ubuntu), install SLURM by hand (the SLURM test will skip)" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slurm-wlm pulls slurmctld, slurmd, slurm-client and slurm-wlm-basic-plugins (gres_gpu.so).
apt-get install -y -qq slurm-wlm munge >/dev/null
have_all
echo "install_slurm: installed $(version)"
