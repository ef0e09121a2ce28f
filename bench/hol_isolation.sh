#!/usr/bin/env bash
# Head-of-line isolation benchmark (issues 3 and 7), one run, same machine, two fresh stacks
# (nats-server -js + `baton ingress` + one `baton worker`, release build, Direct mode, MX from
# dnsmasq on loopback):
#   baseline: smtp-source -s 20 -l 2048 -m $MESSAGES to x@healthy.test -> smtp-sink
#   backlog:  first $BACKLOG messages to x@dead.test (its MX, 127.0.0.2, refuses connections),
#             wait until every one of them has been deferred at least once, then the same
#             healthy run while the backlog sits in the retry lanes.
# Healthy rate = messages at the sink / time from the start of smtp-source to the last arrival.
# Target: backlog rate >= 90% of baseline rate. The two phases alternate ROUNDS times (default
# 2: baseline, backlog, baseline, backlog) and the totals are compared, so a burst of load
# from something else on the machine hits both sides alike.
# SCHEDULE (default "[1m, 5m, 15m, 1h, 4h]", the README's production-like schedule) sets the
# pool's retry tiers. With CHURN=1 the schedule is "[3s, 3s, 3s, 3s, 3s, 3s]" so the deferred
# backlog comes due again and again *during* the healthy run (a harsher case: every retry is a
# fetch, a suspension check, a re-publish and an ack competing for the same 2 cores).
# With SLOW=1 the backlog goes to a *slow* destination instead of a dead one: slow.test's MX
# (127.0.0.2) is an smtp-sink that waits SLOW_DELAY seconds (default 1) before answering DATA,
# reached over the pool's default 20 connections. The healthy run starts as soon as the
# backlog is queued, so slow mail is being fetched, waited on and deferred (451 4.4.5 when it
# would wait longer than the first retry delay) throughout the run.
#
# Usage: bench/hol_isolation.sh   (from the repo root; env: MESSAGES BACKLOG SESSIONS SIZE CHURN
#        SLOW SLOW_DELAY)
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-5000}
BACKLOG=${BACKLOG:-10000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
ROUNDS=${ROUNDS:-2}
CHURN=${CHURN:-0}
SLOW=${SLOW:-0}
SLOW_DELAY=${SLOW_DELAY:-1}
if [ "$CHURN" = 1 ]; then
  SCHEDULE=${SCHEDULE:-"[3s, 3s, 3s, 3s, 3s, 3s]"}
else
  SCHEDULE=${SCHEDULE:-"[1m, 5m, 15m, 1h, 4h]"}
fi
command -v dnsmasq >/dev/null || { echo "dnsmasq not found (apt-get install dnsmasq-base)" >&2; exit 1; }

bench_init
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(load_note)"

rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# phase NAME BACKLOG -> prints "RATE COUNT SECONDS DEAD_RETRIES_DURING"
phase() {
  local name=$1 backlog=$2 sink t0 t_last t n deferred0 deferred1
  start_sink "$name"
  sink=$SINK_OUT
  start_dns "$name" --mx-host=healthy.test,mx.healthy.test,10 --host-record=mx.healthy.test,127.0.0.1 \
    --mx-host=dead.test,mx.dead.test,10 --host-record=mx.dead.test,127.0.0.2
  if [ "$SLOW" = 1 ] && [ "$backlog" -gt 0 ]; then
    # Same port as the healthy sink (Direct mode uses one port at every MX), other address.
    "$SMTP_SINK" -u nobody -w "$SLOW_DELAY" -c "127.0.0.2:$SINK_PORT" 1024 >"$bench_work/$name.slow.out" 2>&1 &
    bench_pids+=($!)
  fi
  start_nats "$name"
  # The sinks listen on loopback, which Direct delivery refuses unless the pool allows it.
  baton_config "$name" "$SINK_PORT" "{mode: Direct, port: $SINK_PORT, allowedNetworks: [127.0.0.0/8]}" "$SCHEDULE"
  start_ingress "$name"
  start_worker "$name" --dns-server "$DNS_ADDR"
  run_source "$name-warmup" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" x@healthy.test >/dev/null
  wait_sink "$sink" "$WARMUP" 120 >/dev/null
  if [ "$backlog" -gt 0 ] && [ "$SLOW" != 1 ]; then
    log "$name: queueing $backlog messages for dead.test"
    run_source "$name-dead" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$backlog" x@dead.test >/dev/null
    # Every backlog message deferred at least once (it now sits in a retry lane).
    for _ in $(seq 1 6000); do
      n=$(metric_sum "$WORKER_METRICS" 'baton_delivery_recipients_total{outcome="deferred"')
      [ "$n" -ge "$backlog" ] && break
      sleep 0.1
    done
    [ "$n" -ge "$backlog" ] || { echo "$name: only $n of $backlog deferred" >&2; return 1; }
  fi
  if [ "$backlog" -gt 0 ] && [ "$SLOW" = 1 ]; then
    log "$name: queueing $backlog messages for dead.test (slow: ${SLOW_DELAY}s per message)"
    run_source "$name-slow" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$backlog" x@dead.test >/dev/null
  fi
  deferred0=$(metric_sum "$WORKER_METRICS" 'baton_delivery_recipients_total{outcome="deferred"')
  log "$name: healthy run, $MESSAGES messages ($(load_note))"
  t0=$(now)
  run_source "$name" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES" x@healthy.test >/dev/null
  t_last=$(wait_sink "$sink" $((WARMUP + MESSAGES)) 900)
  t=$(since "$t0" "$t_last")
  deferred1=$(metric_sum "$WORKER_METRICS" 'baton_delivery_recipients_total{outcome="deferred"')
  n=$(( $(sink_count "$sink") - WARMUP ))
  if [ "$backlog" -gt 0 ] && [ "$SLOW" = 1 ]; then
    log "$name: slow.test meanwhile: $(sink_count "$bench_work/$name.slow.out") delivered, $(metric_sum "$WORKER_METRICS" 'baton_delivery_attempts_total{pool="bench",result="destination_busy"')" \
      "deferred as busy, $(metric_sum "$WORKER_METRICS" 'baton_delivery_waiting_messages') waiting"
  fi
  # The worker first: its shutdown gives messages back to JetStream, which must still be up.
  kill "$WORKER_PID" 2>/dev/null || true
  wait "$WORKER_PID" 2>/dev/null || true
  kill "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
  wait "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
  echo "$(rate "$n" "$t") $n $t $((deferred1 - deferred0))"
}

base_n=0 base_t=0 bl_n=0 bl_t=0 bl_retries=0
for round in $(seq 1 "$ROUNDS"); do
  read -r rate n t _ < <(phase "baseline$round" 0)
  log "baseline $round: $n healthy messages in ${t}s = $rate msg/s"
  base_n=$((base_n + n)); base_t=$(awk -v a="$base_t" -v b="$t" 'BEGIN { print a + b }')
  read -r rate n t retries < <(phase "backlog$round" "$BACKLOG")
  log "backlog $round: $n healthy messages in ${t}s = $rate msg/s; dead.test retries processed meanwhile: $retries"
  bl_n=$((bl_n + n)); bl_t=$(awk -v a="$bl_t" -v b="$t" 'BEGIN { print a + b }')
  bl_retries=$((bl_retries + retries))
done
base_rate=$(rate "$base_n" "$base_t")
bl_rate=$(rate "$bl_n" "$bl_t")

r=$(awk -v a="$bl_rate" -v b="$base_rate" 'BEGIN { printf "%.1f", 100 * a / b }')
ok=$(awk -v r="$r" 'BEGIN { print (r >= 90) ? "MET" : "MISSED" }')
if [ "$SLOW" = 1 ]; then what="queued for a slow destination (${SLOW_DELAY}s per message)"; else what="deferred for a dead destination"; fi
echo "head-of-line isolation: healthy destination $bl_rate msg/s with $BACKLOG $what vs $base_rate msg/s without = ${r}% of baseline; target >= 90%: $ok"
echo "(schedule $SCHEDULE; $ROUNDS rounds; dead.test retries during the healthy runs: $bl_retries; $(load_note) at end; messages=$MESSAGES sessions=$SESSIONS size=$SIZE)"
