#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing the SLURM path (tests/test_slurm.py) or for
# trying `cluster=slurm` without a cluster. Debian/Ubuntu, as root, no systemd needed.
#
#   launch/local_slurm.sh start    # install slurm-wlm + munge if missing, write slurm.conf, start daemons
#   launch/local_slurm.sh start --nodes 2   # two node daemons n1, n2 on this host, for multi-node jobs
#   launch/local_slurm.sh status   # sinfo
#   launch/local_slurm.sh stop     # stop the daemons (by pid, reverse order)
#
# With --nodes N (N >= 2) slurm.conf names N nodes n1..nN, each its own slurmd (`slurmd -N n<i>`, its own
# port, `%n` in its spool/pid/log paths), all on this host; the names go into /etc/hosts (127.0.0.1), as
# a multi-node job's master address is its first node's name and must resolve. `start` without --nodes
# accepts a running cluster of any size (a one-node job runs on either), else starts one node named
# after this host; `start --nodes N` restarts a cluster of another size.
#
# Idempotent: `start` on a running cluster only checks it. It never overwrites a slurm.conf it did not
# write. Settings are chosen for fast requeue tests (see the comments in the config below).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by minigpt launch/local_slurm.sh"
NODES=  # empty: any running cluster will do, else one node
HOSTS_MARK="# minigpt local_slurm.sh nodes"
# the node daemons' pid files (plain files: a link such as slurmd.pid -> slurmd-n1.pid is not a second daemon)
slurmd_pids() { find /var/run/slurm -maxdepth 1 -type f -name 'slurmd*.pid' 2>/dev/null | sort || true; }
node_names() { if [ "${NODES:-1}" -gt 1 ]; then seq -f 'n%g' 1 "$NODES"; fi; }  # none: the one node is this host

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
  local host cpus mem nodes_conf spool pidf logf
  host=$(hostname -s)
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd detects, or the node is drained; leave some headroom.
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$(( mem * 9 / 10 ))
  spool=/var/spool/slurmd pidf=/var/run/slurm/slurmd.pid logf=/var/log/slurm/slurmd.log
  nodes_conf="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"
  if [ "$NODES" -gt 1 ]; then
    # N daemons share this host: each its own port and, through %n (the node name), its own files.
    spool=/var/spool/slurmd-%n pidf=/var/run/slurm/slurmd-%n.pid logf=/var/log/slurm/slurmd-%n.log
    mem=$(( mem / NODES ))
    nodes_conf=$(for i in $(seq 1 "$NODES"); do
      echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"
    done)
  fi
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
SlurmdSpoolDir=$spool
SlurmctldPidFile=/var/run/slurm/slurmctld.pid
SlurmdPidFile=$pidf
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=$logf
# several node daemons on one host take their hardware from slurm.conf, not from what each detects
SlurmdParameters=config_overrides
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MailProg=$(type -P true)
$nodes_conf
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return; fi
  mv "$CONF.new" "$CONF"
  echo "wrote $CONF ($NODES node(s), $cpus CPUs and ${mem} MB each)"
  # running daemons only read the config at start; a changed node set also needs fresh controller state
  if alive /var/run/slurm/slurmctld.pid || [ -n "$(slurmd_pids)" ]; then stop; fi
}

write_hosts() {
  # The node names resolve to this host (a multi-node job's master address is its first node's name).
  local names
  names=$(node_names | tr '\n' ' ')
  grep -v "$HOSTS_MARK" /etc/hosts >/etc/hosts.minigpt || true
  [ -z "$names" ] || echo "127.0.0.1 $names $HOSTS_MARK" >>/etc/hosts.minigpt
  cat /etc/hosts.minigpt >/etc/hosts  # rewrite in place: /etc/hosts may be a bind mount
  rm -f /etc/hosts.minigpt
}

up() {  # the controller and every configured node daemon are alive, and sinfo answers
  alive /var/run/slurm/slurmctld.pid || return 1
  if [ -z "$NODES" ]; then  # any size: every node daemon that has a pid file is alive
    local f n=0
    for f in $(slurmd_pids); do alive "$f" || return 1; n=$((n + 1)); done
    [ "$n" -ge 1 ] && sinfo >/dev/null 2>&1; return
  fi
  if [ "$NODES" -gt 1 ]; then
    for n in $(node_names); do alive "/var/run/slurm/slurmd-$n.pid" || return 1; done
  else
    alive /var/run/slurm/slurmd.pid || return 1
  fi
  [ "$(sinfo -h -N -o %N 2>/dev/null | sort -u | wc -l)" = "$NODES" ]
}

start() {
  if up; then
    sinfo; return  # already up with this many nodes (any user may use it)
  fi
  [ "$(id -u)" = 0 ] || cannot "must run as root (installs packages and starts daemons)"
  NODES=${NODES:-1}
  install_packages
  write_conf
  write_hosts
  mkdir -p /var/run/munge /var/run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  for n in $(node_names); do mkdir -p "/var/spool/slurmd-$n"; done
  chown munge:munge /var/run/munge
  if [ ! -s /etc/munge/munge.key ]; then mungekey --create; chown munge:munge /etc/munge/munge.key; fi
  alive /var/run/munge/munged.pid || runuser -u munge -- munged
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
  alive /var/run/slurm/slurmctld.pid || slurmctld
  if [ "$NODES" -gt 1 ]; then
    for n in $(node_names); do alive "/var/run/slurm/slurmd-$n.pid" || slurmd -N "$n"; done
  else
    alive /var/run/slurm/slurmd.pid || slurmd
  fi
  local t=0
  until [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated)$')" -ge "$NODES" ]; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt 60 ] || die "the node(s) did not come up in 30 s (see /var/log/slurm/slurmd.log and slurmctld.log)"
  done
  sinfo
}

stop() {
  for f in $(slurmd_pids) /var/run/slurm/slurmctld.pid /var/run/munge/munged.pid; do
    alive "$f" || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || continue
    while kill -0 "$pid" 2>/dev/null; do sleep 0.25; done
  done
  echo "stopped"
}

cmd=${1:-start}
[ $# -eq 0 ] || shift
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    *) die "unknown option $1 (usage: $0 start [--nodes N]|stop|status)" ;;
  esac
done
[ -z "$NODES" ] || [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes $NODES is not a positive number"

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) die "usage: $0 start [--nodes N]|stop|status" ;;
esac
