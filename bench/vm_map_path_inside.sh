#!/bin/sh
# In-VM script of bench/vm_map_path.sh (copied into the initramfs; /init runs it after
# binding every edu device to vfio-pci). Busybox sh.
#
#   vm_map_path_inside.sh BACKEND SECONDS DIRECT...     BACKEND: vfio | iommufd
#
# First the direct-ioctl routes (vm_map_bench direct-<DIRECT> on the first edu device, with
# this process's own container/IOAS), while no agent holds the devices; then iommu-broker and
# iommu-agent --backend=BACKEND (as tests/vm/vm_e2e.sh starts them) and the launcher-socket
# route (vm_map_bench socket).
BACKEND="${1:?usage: vm_map_path_inside.sh vfio|iommufd SECONDS DIRECT...}"
SECS="${2:?seconds}"
shift 2
NODE=vm1
SOCK=/run/iommu-agent/launcher.sock
wait_file() { i=0; while [ $i -lt 300 ]; do [ -s "$1" ] && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
dump_logs() {
  echo "----- broker log (tail) -----"; tail -n 30 /tmp/broker.log 2>/dev/null
  echo "----- agent log (tail) -----"; tail -n 60 /tmp/agent.log 2>/dev/null
}

echo "vm_map_path: kernel=$(uname -r) backend=$BACKEND direct=$*"
for d in "$@"; do
  vm_map_bench "direct-$d" --seconds="$SECS" || { echo "vm_map_path: direct-$d failed"; exit 13; }
done

iommu-broker --insecure --listen=127.0.0.1:7400 --db=/tmp/broker.db --port_file=/tmp/bport \
  >/tmp/broker.log 2>&1 &
wait_file /tmp/bport || { echo "vm_map_path: broker did not start"; dump_logs; exit 10; }
mkdir -p /run/iommu-agent
iommu-agent --insecure --node=$NODE --broker=127.0.0.1:7400 --backend="$BACKEND" \
  --devices=1234:11e8 --listen=127.0.0.1:0 --port_file=/tmp/aport --launcher_socket=$SOCK \
  >/tmp/agent.log 2>&1 &
wait_file /tmp/aport || { echo "vm_map_path: agent did not start"; dump_logs; exit 11; }
grep -m1 'event=serving' /tmp/agent.log

vm_map_bench socket --broker=127.0.0.1:7400 --node=$NODE --socket=$SOCK --seconds="$SECS"
rc=$?
[ $rc = 0 ] || dump_logs
exit $rc
