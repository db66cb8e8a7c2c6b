#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing the SLURM path (tests/test_slurm.py) or for
# trying `cluster=slurm` without a cluster. Debian/Ubuntu, as root, no systemd needed.
#
#   launch/local_slurm.sh start    # install slurm-wlm + munge if missing, write slurm.conf, start daemons
#   launch/local_slurm.sh status   # sinfo
#   launch/local_slurm.sh stop     # stop the daemons (by pid, reverse order)
#
# Idempotent: `start` on a running cluster only checks it. It never overwrites a slurm.conf it did not
# write. Settings are chosen for fast requeue tests (see the comments in the config below).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by minigpt launch/local_slurm.sh"
PIDS=(/var/run/slurm/slurmd.pid /var/run/slurm/slurmctld.pid /var/run/munge/munged.pid)

die() { echo "local_slurm.sh: $*" >&2; exit 1; }
# Exit code 3: SLURM cannot be installed here (tests skip on it); anything else non-zero is a failure.
cannot() { echo "local_slurm.sh: $*" >&2; exit 3; }
alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ]; }  # works for non-root users too

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || cannot "slurm is not installed and apt-get is unavailable: install slurm-wlm and munge"
  echo "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || cannot "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "keeping existing $CONF (not written by this script)"; return
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd detects, or the node is drained; leave some headroom.
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$(( mem * 9 / 10 ))
  mkdir -p /etc/slurm
  cat >"$CONF.new" <<CONF
$MARK
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it restarts (default 120; 5 is the minimum).
AuthInfo=cred_expire=5
MpiDefault=none
# No cgroups: works in containers and VMs without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Schedule every 5 s so requeued jobs restart in seconds, not minutes.
SchedulerParameters=bf_interval=5,sched_interval=5
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/run/slurm/slurmctld.pid
SlurmdPidFile=/var/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MailProg=$(command -v true)
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return; fi
  mv "$CONF.new" "$CONF"
  echo "wrote $CONF (node $host, $cpus CPUs, ${mem} MB)"
  # running daemons only read the config at start
  if alive /var/run/slurm/slurmctld.pid || alive /var/run/slurm/slurmd.pid; then stop; fi
}

start() {
  if alive /var/run/slurm/slurmctld.pid && alive /var/run/slurm/slurmd.pid && sinfo >/dev/null 2>&1; then
    sinfo; return  # already up (any user may use it)
  fi
  [ "$(id -u)" = 0 ] || cannot "must run as root (installs packages and starts daemons)"
  install_packages
  write_conf
  mkdir -p /var/run/munge /var/run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown munge:munge /var/run/munge
  if [ ! -s /etc/munge/munge.key ]; then mungekey --create; chown munge:munge /etc/munge/munge.key; fi
  alive /var/run/munge/munged.pid || runuser -u munge -- munged
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
  alive /var/run/slurm/slurmctld.pid || slurmctld
  alive /var/run/slurm/slurmd.pid || slurmd
  local t=0
  until sinfo -h -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated'; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt 60 ] || die "the node did not come up in 30 s (see /var/log/slurm/slurmd.log and slurmctld.log)"
  done
  sinfo
}

stop() {
  for f in "${PIDS[@]}"; do
    alive "$f" || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
    while kill -0 "$pid" 2>/dev/null; do sleep 0.25; done
  done
  echo "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) die "usage: $0 start|stop|status" ;;
esac
