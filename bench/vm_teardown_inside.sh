#!/bin/sh
# In-VM script of bench/vm_teardown.sh (copied into the initramfs; /init runs it after
# binding every edu device to vfio-pci). Busybox sh.
#
#   vm_teardown_inside.sh BACKEND MAPPINGS     BACKEND: vfio | iommufd
#
# Starts iommu-broker and iommu-agent --backend=BACKEND (as bench/vm_map_path_inside.sh
# does), then vm_teardown_bench: MAPPINGS one-page mappings in one launcher session, the
# session closed, heartbeat-like reads timed during the teardown.
BACKEND="${1:?usage: vm_teardown_inside.sh vfio|iommufd MAPPINGS}"
N="${2:?mappings}"
NODE=vm1
SOCK=/run/iommu-agent/launcher.sock
wait_file() { i=0; while [ $i -lt 300 ]; do [ -s "$1" ] && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
dump_logs() {
  echo "----- broker log (tail) -----"; tail -n 30 /tmp/broker.log 2>/dev/null
  echo "----- agent log (tail) -----"; tail -n 60 /tmp/agent.log 2>/dev/null
}

echo "vm_teardown: kernel=$(uname -r) backend=$BACKEND mappings=$N"
iommu-broker --insecure --listen=127.0.0.1:7400 --db=/tmp/broker.db --port_file=/tmp/bport \
  >/tmp/broker.log 2>&1 &
wait_file /tmp/bport || { echo "vm_teardown: broker did not start"; dump_logs; exit 10; }
mkdir -p /run/iommu-agent
iommu-agent --insecure --node=$NODE --broker=127.0.0.1:7400 --backend="$BACKEND" \
  --devices=1234:11e8 --listen=127.0.0.1:0 --port_file=/tmp/aport --launcher_socket=$SOCK \
  >/tmp/agent.log 2>&1 &
AGENT_PID=$!
wait_file /tmp/aport || { echo "vm_teardown: agent did not start"; dump_logs; exit 11; }
grep -m1 'event=serving' /tmp/agent.log

vm_teardown_bench --broker=127.0.0.1:7400 --agent=127.0.0.1:$(cat /tmp/aport) \
  --agent_pid=$AGENT_PID --node=$NODE --socket=$SOCK --mappings="$N"
rc=$?
grep -a -E 'event=(session_closed|session_unmap_failed|node_unavailable)' /tmp/agent.log | tail -n 5
grep -a -E 'UNAVAILABLE|unavailable' /tmp/broker.log | tail -n 5
[ $rc = 0 ] || dump_logs
exit $rc
