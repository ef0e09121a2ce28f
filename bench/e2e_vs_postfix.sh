#!/usr/bin/env bash
# End-to-end benchmark (issue 3), one run, same machine:
#   smtp-source -s 20 -l 2048 -m 20000 -f app@example.com -t x@dest.test HOST:PORT
#   (a) -> Baton (nats-server -js + `baton ingress` + one `baton worker`, release build) -> smtp-sink
#   (b) -> stock Postfix (private instance) relaying to smtp-sink
# End-to-end rate = messages counted at the sink / time from the start of smtp-source until the
# last one arrives (sink counter sampled every 20 ms). Target: Baton >= 4x Postfix.
# Then (LATENCY=1, default): accept-to-delivery latency at a fixed RATE msg/s (default 500) for
# LAT_SECONDS, from the worker's baton_delivery_accept_to_delivery_seconds histogram (difference
# of two scrapes), target p99 < 50 ms.
#
# Usage: bench/e2e_vs_postfix.sh   (from the repo root; env: MESSAGES SESSIONS SIZE LATENCY RATE LAT_SECONDS)
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
LATENCY=${LATENCY:-1}
RATE=${RATE:-500}
LAT_SECONDS=${LAT_SECONDS:-20}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}

bench_init
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(load_note)"

rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_pct() { awk -v a="$1" -v b="$2" -v t="$3" -v h="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * (b - a) / h / t }'; }

# ---------------------------------------------------------------- Baton ----------------------
start_sink baton
baton_sink_out=$SINK_OUT
start_nats baton
baton_config baton "$SINK_PORT"
start_ingress baton
start_worker baton
log "baton: warm-up $WARMUP messages"
run_source baton-warmup "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
wait_sink "$baton_sink_out" "$WARMUP" 120 >/dev/null
curl -fs "$WORKER_METRICS/metrics" >"$bench_work/worker.0.prom"

log "baton: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
c_i=$(cpu_ticks "$INGRESS_PID"); c_w=$(cpu_ticks "$WORKER_PID"); c_n=$(cpu_ticks "$NATS_PID")
t0=$(now)
baton_accept_t=$(run_source baton "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
t_last=$(wait_sink "$baton_sink_out" $((WARMUP + MESSAGES)) "$DRAIN_TIMEOUT")
baton_t=$(since "$t0" "$t_last")
c_i1=$(cpu_ticks "$INGRESS_PID"); c_w1=$(cpu_ticks "$WORKER_PID"); c_n1=$(cpu_ticks "$NATS_PID")
curl -fs "$WORKER_METRICS/metrics" >"$bench_work/worker.1.prom"
sleep 1
baton_count=$(( $(sink_count "$baton_sink_out") - WARMUP ))
baton_rate=$(rate "$baton_count" "$baton_t")
sat_lat=$(python3 bench/hist_quantiles.py "$bench_work/worker.0.prom" "$bench_work/worker.1.prom" baton_delivery_accept_to_delivery_seconds)
log "baton: smtp-source done in ${baton_accept_t}s ($(rate "$MESSAGES" "$baton_accept_t") msg/s accepted); last at sink after ${baton_t}s; sink count $baton_count -> $baton_rate msg/s"
log "baton: CPU ingress $(cpu_pct "$c_i" "$c_i1" "$baton_t")% worker $(cpu_pct "$c_w" "$c_w1" "$baton_t")% nats-server $(cpu_pct "$c_n" "$c_n1" "$baton_t")% smtp-source $(source_cpu baton "$baton_accept_t")%; accept-to-delivery under saturation: $sat_lat"

lat_line=""
if [ "$LATENCY" = 1 ]; then
  sleep 2
  curl -fs "$WORKER_METRICS/metrics" >"$bench_work/worker.2.prom"
  log "baton: paced load $RATE msg/s for ${LAT_SECONDS}s ($(load_note))"
  before=$(sink_count "$baton_sink_out")
  paced=$(python3 bench/paced_source.py 127.0.0.1 "$INGRESS_PORT" --rate "$RATE" --seconds "$LAT_SECONDS" --size "$SIZE")
  sent=$(echo "$paced" | sed -n 's/.*sent=\([0-9]*\).*/\1/p')
  wait_sink "$baton_sink_out" $((before + sent)) 120 >/dev/null
  sleep 0.5
  curl -fs "$WORKER_METRICS/metrics" >"$bench_work/worker.3.prom"
  lat=$(python3 bench/hist_quantiles.py "$bench_work/worker.2.prom" "$bench_work/worker.3.prom" baton_delivery_accept_to_delivery_seconds)
  log "baton: paced client: $paced"
  log "baton: accept-to-delivery at $RATE msg/s: $lat"
  p99=$(echo "$lat" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')
  within=$(echo "$lat" | sed -n 's/.*within_50ms=\([0-9.]*\)%.*/\1/p')
  ok=$(awk -v w="$within" 'BEGIN { print (w > 99) ? "MET" : "MISSED" }')
  achieved=$(echo "$paced" | sed -n 's/.*achieved=\([0-9.]*\).*/\1/p')
  lat_line="latency: accept-to-delivery at $achieved msg/s (asked $RATE): $(echo "$lat" | sed 's/ within/; within/'); target p99 < 50 ms: $ok"
fi
kill "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
wait "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true

# ---------------------------------------------------------------- stock Postfix --------------
start_sink postfix
pf_sink_out=$SINK_OUT
start_postfix postfix "$SINK_PORT"
log "postfix: warm-up $WARMUP messages"
run_source postfix-warmup "$PF_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
wait_sink "$pf_sink_out" "$WARMUP" 120 >/dev/null
log "postfix: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
t0=$(now)
pf_accept_t=$(run_source postfix "$PF_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
t_last=$(wait_sink "$pf_sink_out" $((WARMUP + MESSAGES)) "$DRAIN_TIMEOUT")
pf_t=$(since "$t0" "$t_last")
sleep 1
pf_count=$(( $(sink_count "$pf_sink_out") - WARMUP ))
pf_rate=$(rate "$pf_count" "$pf_t")
log "postfix: smtp-source done in ${pf_accept_t}s ($(rate "$MESSAGES" "$pf_accept_t") msg/s accepted); last at sink after ${pf_t}s; sink count $pf_count -> $pf_rate msg/s"
stop_postfix "$PF_DIR"

# ---------------------------------------------------------------- summary --------------------
r=$(ratio "$baton_rate" "$pf_rate")
ok=$(awk -v r="$r" 'BEGIN { print (r >= 4) ? "MET" : "MISSED" }')
echo "end-to-end: baton $baton_rate msg/s ($baton_count at sink in ${baton_t}s) vs stock postfix $pf_rate msg/s ($pf_count in ${pf_t}s) = ${r}x postfix; target >= 4x: $ok"
[ -n "$lat_line" ] && echo "$lat_line"
echo "($(load_note) at end; messages=$MESSAGES sessions=$SESSIONS size=$SIZE baton-log-level=$BATON_LOG)"
