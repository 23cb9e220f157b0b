#!/usr/bin/env bash
# Install what the SLURM tests (tests/test_slurm.py) need: the Debian packages slurmctld, slurmd, munge and
# slurm-client. Idempotent and quick: nothing to do when the programs are there. It installs only; no system
# service is configured or started: the tests run a private single-node cluster (own config, ports, munge
# socket) and stop it afterwards.
set -euo pipefail
missing=0
for program in slurmctld slurmd munged sbatch squeue scontrol; do
    command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || missing=1
done
[ "$missing" = 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
packages=(slurmctld slurmd munge slurm-client)
export DEBIAN_FRONTEND=noninteractive
# Package lists may be missing or stale on a fresh machine: update only when the first try fails.
$sudo apt-get install -y --no-install-recommends "${packages[@]}" \
    || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${packages[@]}"; }
