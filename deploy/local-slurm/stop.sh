#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh: slurmd, slurmctld, then munged.
# Only the processes named in their pid files are signalled. Safe to run when nothing is running.
set -euo pipefail

RUN_DIR=${ZEMOSAIC_SLURM_RUN_DIR:-/run}

stop_pidfile() {
    local name=$1 pidfile=$2
    if [[ ! -s ${pidfile} ]]; then
        echo "${name}: not running (no ${pidfile})"
        return 0
    fi
    local pid
    pid=$(<"${pidfile}")
    if ! kill -0 "${pid}" 2>/dev/null; then
        echo "${name}: stale pid file ${pidfile} (pid ${pid} is gone)"
        rm -f "${pidfile}"
        return 0
    fi
    kill -TERM "${pid}"
    for _ in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "${pid}" 2>/dev/null; then
        echo "${name}: pid ${pid} ignored SIGTERM for 10 s, sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
    fi
    rm -f "${pidfile}"
    echo "${name}: stopped (pid ${pid})"
}

stop_pidfile slurmd "${RUN_DIR}/slurmd.pid"
stop_pidfile slurmctld "${RUN_DIR}/slurmctld.pid"
stop_pidfile munged "${RUN_DIR}/munge/munged.pid"
