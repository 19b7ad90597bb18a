#!/usr/bin/env bash
# Install a single-node SLURM (controller, compute daemon, client tools) and munge.
# Debian/Ubuntu, run as root. Safe to run again: apt-get skips what is already installed.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    echo "install.sh must run as root (try: sudo $0)" >&2
    exit 1
fi

packages=(munge slurm-wlm slurmctld slurmd slurm-client)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("${pkg}")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "SLURM and munge are already installed: ${packages[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
echo "slurm version: $(dpkg-query -W -f='${Version}' slurmctld)"
