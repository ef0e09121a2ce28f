#!/usr/bin/env bash
# The cost of `sync_interval: always` (fsync every stored message; `baton dev --durable`) on a
# single nats-server: the ingress accept rate (each 250 = PubAck received) with the default
# periodic sync and with `always`, same machine, same load, no worker (acceptance only).
#
# Usage: bench/sync_interval.sh   (from the repo root; env: MESSAGES SESSIONS SIZE, BATON)
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-3000}
SESSIONS=${SESSIONS:-10}
SIZE=${SIZE:-2048}

bench_init
log "machine: $(nproc) cores; $(nats-server --version); $(load_note)"
for mode in default always; do
  NATS_SYNC_ALWAYS=$([ "$mode" = always ] && echo 1 || echo 0) start_nats "$mode"
  start_sink "$mode-unused"
  baton_config "$mode" "$SINK_PORT"
  start_ingress "$mode"
  secs=$(run_source "$mode" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES") || exit 1
  log "sync_interval $mode: $MESSAGES messages in ${secs}s = $(awk -v n="$MESSAGES" -v t="$secs" 'BEGIN { printf "%.0f", n / t }') msg/s"
  kill "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
  wait "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
done
