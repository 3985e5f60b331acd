#!/usr/bin/env bash
# Stop the test cluster of slurm-up.sh: cancel its jobs, then stop slurmd, slurmctld, slurmdbd,
# MariaDB and munged, each by the PID file slurm-up.sh gave it under the run folder, and remove
# the /etc/slurm/slurm.conf link slurm-up.sh made (nothing else is touched). Idempotent: a daemon
# that is not running is skipped.
#
#   tests/cluster/slurm-down.sh [RUN_DIR] [--purge]    (default /tmp/mripipe-slurm; --purge also
#                                                       deletes the run folder)
set -euo pipefail

RUN=$(realpath -m "${1:-/tmp/mripipe-slurm}")
PURGE=${2:-}
export SLURM_CONF="$RUN/etc/slurm.conf"

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {  # stop NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL
  local name=$1 pidfile=$2 pid
  alive "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "slurm-down: $name ($pid) ignored SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  echo "slurm-down: stopped $name ($pid)"
}

if [[ -f "$SLURM_CONF" ]] && alive "$RUN/pid/slurmctld.pid"; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [[ -n $jobs ]]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 20); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.5; done
  fi
fi
stop slurmd "$RUN/pid/slurmd.pid"
stop slurmctld "$RUN/pid/slurmctld.pid"
stop slurmdbd "$RUN/pid/slurmdbd.pid"
stop mariadb "$RUN/mysql/mysqld.pid"   # mysqld_safe exits after a clean shutdown
stop munged "$RUN/munge/munged.pid"

if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]]; then
  rm -f /etc/slurm/slurm.conf
fi
if [[ $PURGE == --purge ]]; then
  rm -rf "$RUN"
  echo "slurm-down: removed $RUN"
fi
