#!/usr/bin/env bash
# N processes on 127.0.0.1, each with D simulated CPU devices, joined by jax.distributed.
#
#   launch/local_multiprocess.sh 2 2 python -m jaxssl.train --config=configs/simclr.py:test --workdir=/tmp/mp
#
# Each process gets --coordinator_address/--num_processes/--process_id appended; logs go to
# $LOG_DIR/process_<i>.log (default: a temp dir, printed). Exits non-zero if any process fails.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2; exit 2
fi
n=$1; d=$2; shift 2
port=${COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d)}
echo "logs: $log_dir" >&2
pids=()
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$d" JAX_PLATFORMS=cpu \
    "$@" --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" \
    >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; last lines of $log_dir/process_$i.log:" >&2
    tail -20 "$log_dir/process_$i.log" >&2
    status=1
  fi
done
exit $status
