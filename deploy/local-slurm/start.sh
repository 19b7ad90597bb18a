#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback: munged, slurmctld and slurmd, started directly
# (no systemd), with one partition "debug" holding this machine. Run as root after install.sh.
# Running it again stops the daemons, rewrites the configuration and starts them from a clean state.
#
# Environment overrides:
#   ZEMOSAIC_SLURM_NODE      node name (default: `hostname -s`, or localhost when that is empty)
#   ZEMOSAIC_SLURM_CPUS      CPUs offered to jobs (default: nproc)
#   ZEMOSAIC_SLURM_MEMORY_MB memory offered to jobs in MB (default: 90% of available memory)
#   ZEMOSAIC_SLURM_TIMEOUT   seconds to wait for the node to become idle (default: 60)
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    echo "start.sh must run as root (try: sudo $0)" >&2
    exit 1
fi
for cmd in munged slurmctld slurmd sinfo srun scontrol; do
    if ! command -v "${cmd}" >/dev/null; then
        echo "${cmd} not found: run $(dirname "$0")/install.sh first" >&2
        exit 1
    fi
done

HERE=$(cd "$(dirname "$0")" && pwd)
CONF_DIR=/etc/slurm
CONF=${CONF_DIR}/slurm.conf
LOG_DIR=/var/log/slurm
RUN_DIR=/run
NODE=${ZEMOSAIC_SLURM_NODE:-$(hostname -s 2>/dev/null || true)}
NODE=${NODE:-localhost}
CPUS=${ZEMOSAIC_SLURM_CPUS:-$(nproc)}
AVAILABLE_MB=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
MEMORY_MB=${ZEMOSAIC_SLURM_MEMORY_MB:-$((AVAILABLE_MB * 9 / 10))}
TIMEOUT=${ZEMOSAIC_SLURM_TIMEOUT:-60}

"${HERE}/stop.sh"

# --- munge -------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 "${RUN_DIR}/munge"
if [[ ! -s /etc/munge/munge.key ]]; then
    echo "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
runuser -u munge -- munged --pid-file="${RUN_DIR}/munge/munged.pid"
for _ in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n | unmunge >/dev/null || { echo "munged does not answer (see /var/log/munge/munged.log)" >&2; exit 1; }

# --- slurm configuration -------------------------------------------------------------------
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld "${LOG_DIR}"
install -d -o root -g root -m 0755 /var/spool/slurmd "${CONF_DIR}"
cat >"${CONF}" <<CONF
# Written by deploy/local-slurm/start.sh: single-node SLURM on loopback for zemosaic-dask tests.
ClusterName=zemosaic-local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
# No cgroups in this container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.log
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
echo "wrote ${CONF}: node ${NODE}, ${CPUS} CPUs, ${MEMORY_MB} MB"

# --- daemons (clean state: -c drops jobs left from a previous run) ------------------------
slurmctld -c
slurmd -c -N "${NODE}"

deadline=$((SECONDS + TIMEOUT))
state=""
while ((SECONDS < deadline)); do
    state=$(sinfo -h -n "${NODE}" -o %T 2>/dev/null || true)
    [[ ${state} == idle ]] && break
    sleep 1
done
if [[ ${state} != idle ]]; then
    echo "node ${NODE} is '${state:-unknown}' after ${TIMEOUT} s, not idle; see ${LOG_DIR}/slurmctld.log and slurmd.log" >&2
    exit 1
fi
if ! out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1); then
    echo "srun hostname failed: ${out}" >&2
    exit 1
fi
echo "srun hostname -> ${out}"
sinfo
