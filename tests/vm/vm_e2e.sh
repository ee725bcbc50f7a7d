#!/bin/sh
# In-VM script of vm_type1_test / vm_iommufd_test (copied into the initramfs by
# tests/vm/vm_dma.sh; /init runs it after binding every edu device to vfio-pci):
#
#   vm_e2e.sh BACKEND [vm_dma_test args...]      BACKEND: vfio | iommufd | auto
#
# First runs the backend conformance suite (/bin/backend_conformance) on the edu devices
# with the real backend(s) the kernel offers for BACKEND: vfio -> vfio; iommufd ->
# iommufd, then vfio (that kernel has VFIO_CONTAINER too); auto -> none. It must run
# before the agent, which then takes the devices; a failure ends the script (exit 13).
# Then starts iommu-broker and iommu-agent (--backend=BACKEND, --devices=1234:11e8) on
# 127.0.0.1, waits until the node is ready, prints the backend the agent actually used
# (from its log), runs vm_dma_test and exits with its status. The agent is started by
# /tmp/start_agent.sh (pid in /tmp/agent.pid) so that vm_dma_test can kill -9 it and start
# it again with the same flags. Busybox sh.
BACKEND="${1:?usage: vm_e2e.sh vfio|iommufd|auto [vm_dma_test args]}"
shift
NODE=vm1
SOCK=/run/iommu-agent/launcher.sock

wait_file() { i=0; while [ $i -lt 300 ]; do [ -s "$1" ] && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
dump_logs() {
  echo "----- broker log (tail) -----"; tail -n 30 /tmp/broker.log 2>/dev/null
  echo "----- agent log (tail) -----"; tail -n 60 /tmp/agent.log 2>/dev/null
}
t0=$(cut -d' ' -f1 /proc/uptime)

case "$BACKEND" in
  vfio) conformance="vfio" ;;
  iommufd) conformance="iommufd vfio" ;;
  *) conformance="" ;;
esac
for kind in $conformance; do
  tc=$(cut -d' ' -f1 /proc/uptime)
  backend_conformance "$kind"
  crc=$?
  echo "vm_e2e: backend_conformance $kind rc=$crc in $(awk -v a="$tc" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{printf "%.1f", b-a}') s"
  [ $crc = 0 ] || { echo "vm_e2e: backend conformance failed for $kind"; exit 13; }
done
t0=$(cut -d' ' -f1 /proc/uptime)

# Plaintext inside the VM (no openssl in the initramfs); mTLS is covered on
# the host by tests/authz_test and tests/cli_test.
export IOMMUCTL_INSECURE=1
iommu-broker --insecure --listen=127.0.0.1:7400 --db=/tmp/broker.db --port-file=/tmp/bport \
  >/tmp/broker.log 2>&1 &
wait_file /tmp/bport || { echo "vm_e2e: broker did not start"; dump_logs; exit 10; }

mkdir -p /run/iommu-agent /run/iommu-fdholder
# The fd holder outlives every agent run: it keeps the IOMMU and memory fds the agent hands
# it, so a restarted agent re-adopts its containers and the guests' DMA never stops.
iommu-fdholder --socket=/run/iommu-fdholder/fdholder.sock >/tmp/fdholder.log 2>&1 &
i=0; while [ $i -lt 100 ] && [ ! -S /run/iommu-fdholder/fdholder.sock ]; do sleep 0.1; i=$((i + 1)); done
[ -S /run/iommu-fdholder/fdholder.sock ] || { echo "vm_e2e: fd holder did not start"; cat /tmp/fdholder.log; exit 10; }
cat >/tmp/start_agent.sh <<AGENT
#!/bin/sh
rm -f /tmp/aport
echo "--- agent start \$(cut -d' ' -f1 /proc/uptime)" >>/tmp/agent.log
iommu-agent --insecure --node=$NODE --broker=127.0.0.1:7400 --backend=$BACKEND --devices=1234:11e8 \\
  --listen=127.0.0.1:0 --port-file=/tmp/aport --launcher-socket=$SOCK --state-dir=/tmp/agent-state \\
  --fd-store=holder:/run/iommu-fdholder/fdholder.sock --session-resume-timeout=10s >>/tmp/agent.log 2>&1 &
echo \$! >/tmp/agent.pid
AGENT
# Part h of vm_dma_test (issue 12): a finite RLIMIT_MEMLOCK (256 KiB) and neither
# CAP_IPC_LOCK nor CAP_SYS_RESOURCE (util-linux setpriv): first without
# --kernel-pin-bytes-per-tenant (must refuse; output and status kept for the test), then with
# a share of 8 pages.
cat >/tmp/start_agent_memlock.sh <<AGENT
#!/bin/sh
ulimit -l 256
DROP="/usr/bin/setpriv --inh-caps=-ipc_lock,-sys_resource --bounding-set=-ipc_lock,-sys_resource"
ARGS="--insecure --node=$NODE --broker=127.0.0.1:7400 --backend=$BACKEND --devices=1234:11e8 --listen=127.0.0.1:0 --port-file=/tmp/aport --launcher-socket=$SOCK --state-dir=/tmp/agent-state --fd-store=holder:/run/iommu-fdholder/fdholder.sock --session-resume-timeout=10s"
\$DROP iommu-agent \$ARGS >/tmp/agent_memlock_refused.log 2>&1
echo "rc=\$?" >>/tmp/agent_memlock_refused.log
rm -f /tmp/aport
echo "--- agent start (memlock 256 KiB, no CAP_IPC_LOCK) \$(cut -d' ' -f1 /proc/uptime)" >>/tmp/agent.log
\$DROP iommu-agent \$ARGS --kernel-pin-bytes-per-tenant=32768 >>/tmp/agent.log 2>&1 &
echo \$! >/tmp/agent.pid
AGENT
chmod +x /tmp/start_agent.sh /tmp/start_agent_memlock.sh
/tmp/start_agent.sh
wait_file /tmp/aport || { echo "vm_e2e: agent did not start"; dump_logs; exit 11; }

ready=0
i=0
while [ $i -lt 100 ]; do
  if iommuctl node list 2>/dev/null | grep -q "$NODE *ready"; then ready=1; break; fi
  sleep 0.2; i=$((i + 1))
done
iommuctl node list
[ $ready = 1 ] || { echo "vm_e2e: node $NODE never became ready"; dump_logs; exit 12; }

# The backend the agent actually used, from its "serving" log line.
used="$(grep -m1 'event=serving' /tmp/agent.log | sed -n 's/.*backend=\([^ ]*\).*/\1/p')"
echo "vm_e2e: agent backend requested=$BACKEND used=${used:-UNKNOWN} kernel=$(uname -r)"
grep -m1 'event=serving' /tmp/agent.log
grep -m1 'event=memlock' /tmp/agent.log
t1=$(cut -d' ' -f1 /proc/uptime)
echo "vm_e2e: broker+agent ready in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"

vm_dma_test --broker=127.0.0.1:7400 --node=$NODE --socket=$SOCK \
  --agent_pid_file=/tmp/agent.pid --agent_restart_cmd=/tmp/start_agent.sh \
  --agent_memlock_restart_cmd=/tmp/start_agent_memlock.sh "$@"
rc=$?
t2=$(cut -d' ' -f1 /proc/uptime)
echo "vm_e2e: vm_dma_test rc=$rc in $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}') s"
grep 'event=memlock' /tmp/agent.log
echo "vm_e2e: agent backend used after restart(s): $(grep 'event=serving' /tmp/agent.log | sed -n 's/.*backend=\([^ ]*\).*/\1/p' | tr '\n' ' ')"
if [ $rc != 0 ]; then dump_logs; fi
echo "----- agent warnings/errors -----"
grep -E 'level=(warning|error)|lvl=(W|E)' /tmp/agent.log | tail -n 40
exit $rc
