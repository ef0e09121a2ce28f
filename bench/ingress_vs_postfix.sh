#!/usr/bin/env bash
# Acceptance benchmark (issue 2), one run, same machine:
#   smtp-source -s 20 -l 2048 -m 20000 -f app@example.com -t x@dest.test HOST:PORT
# against
#   (a) Baton: `baton ingress` (production binary, release build) + `nats-server -js`, config
#       applied with `baton config apply`, NO worker for the pool -> only acceptance is measured
#       (each 250 means the message is in JetStream, PubAck received);
#   (b) stock Postfix (private instance, own config/queue dir) relaying to smtp-sink;
#   (c) the same Postfix with every message put on hold: accept-only, no delivery (like-for-like).
# Accept rate = messages / wall time of smtp-source. Target: Baton >= 5x Postfix (b).
# Then: peak RSS (VmHWM) of a fresh ingress holding 1,000 idle sessions (EHLO done), against the
# idle ingress as baseline. Target <= 64 MiB.
#
# Usage: bench/ingress_vs_postfix.sh   (from the repo root; env: MESSAGES SESSIONS SIZE IDLE)
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
IDLE=${IDLE:-1000}
WARMUP=${WARMUP:-200}

bench_init
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(load_note)"

rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
metric() { # URL NAME -> sum of the metric's samples
  curl -fs "$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}

# ---------------------------------------------------------------- Baton: idle-session RSS ----
start_nats baton
start_sink baton-unused
baton_config baton "$SINK_PORT"
start_ingress baton
sleep 1
idle_rss=$(vm_kib "$INGRESS_PID" VmRSS)
idle_hwm=$(vm_kib "$INGRESS_PID" VmHWM)
log "idle ingress: VmRSS $(mib "$idle_rss") MiB, VmHWM $(mib "$idle_hwm") MiB"

python3 bench/idle_sessions.py 127.0.0.1 "$INGRESS_PORT" "$IDLE" --hold 300 \
  >"$bench_work/idle.out" 2>&1 </dev/null &
idle_pid=$!
bench_pids+=("$idle_pid")
for _ in $(seq 1 600); do
  grep -q '^ready' "$bench_work/idle.out" && break
  kill -0 "$idle_pid" 2>/dev/null || { cat "$bench_work/idle.out" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready' "$bench_work/idle.out" || { echo "idle sessions never established" >&2; exit 1; }
sleep 2 # let the ingress settle with all sessions open
active=$(metric "$INGRESS_METRICS" baton_ingress_sessions_active)
sess_rss=$(vm_kib "$INGRESS_PID" VmRSS)
sess_hwm=$(vm_kib "$INGRESS_PID" VmHWM)
log "with $IDLE idle sessions ($(cat "$bench_work/idle.out"), sessions_active=$active): VmRSS $(mib "$sess_rss") MiB, VmHWM $(mib "$sess_hwm") MiB"
kill "$idle_pid" 2>/dev/null || true
wait "$idle_pid" 2>/dev/null || true

# ---------------------------------------------------------------- Baton: accept rate ---------
log "baton: warm-up $WARMUP messages"
run_source baton-warmup "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
pub0_sum=$(metric "$INGRESS_METRICS" baton_ingress_publish_duration_seconds_sum)
pub0_cnt=$(metric "$INGRESS_METRICS" baton_ingress_publish_duration_seconds_count)
log "baton: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
cpu0=$(awk '{print $14 + $15}' "/proc/$INGRESS_PID/stat"); ncpu0=$(awk '{print $14 + $15}' "/proc/$NATS_PID/stat")
baton_t=$(run_source baton "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
cpu1=$(awk '{print $14 + $15}' "/proc/$INGRESS_PID/stat"); ncpu1=$(awk '{print $14 + $15}' "/proc/$NATS_PID/stat")
baton_rate=$(rate "$MESSAGES" "$baton_t")
accepted=$(metric "$INGRESS_METRICS" baton_ingress_messages_accepted_total)
pub_sum=$(metric "$INGRESS_METRICS" baton_ingress_publish_duration_seconds_sum)
pub_cnt=$(metric "$INGRESS_METRICS" baton_ingress_publish_duration_seconds_count)
pub_ms=$(awk -v s="$pub_sum" -v s0="$pub0_sum" -v c="$pub_cnt" -v c0="$pub0_cnt" 'BEGIN { if (c > c0) printf "%.2f", 1000 * (s - s0) / (c - c0); else print "n/a" }')
tck=$(getconf CLK_TCK)
ing_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$baton_t" -v h="$tck" 'BEGIN { printf "%.0f", 100 * (b - a) / h / t }')
nats_cpu=$(awk -v a="$ncpu0" -v b="$ncpu1" -v t="$baton_t" -v h="$tck" 'BEGIN { printf "%.0f", 100 * (b - a) / h / t }')
load_hwm=$(vm_kib "$INGRESS_PID" VmHWM)
log "baton: ${baton_t}s -> $baton_rate msg/s; accepted_total=$accepted; mean PubAck wait ${pub_ms} ms; CPU ingress ${ing_cpu}% nats-server ${nats_cpu}% smtp-source $(source_cpu baton "$baton_t")%; ingress VmHWM now $(mib "$load_hwm") MiB"
kill "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
wait "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true

# ---------------------------------------------------------------- stock Postfix --------------
start_sink postfix
start_postfix postfix "$SINK_PORT"
log "postfix (stock, relaying): warm-up $WARMUP messages"
run_source postfix-warmup "$PF_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
wait_sink "$SINK_OUT" "$WARMUP" 120 >/dev/null
log "postfix (stock, relaying): smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
pf_t=$(run_source postfix "$PF_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
pf_rate=$(rate "$MESSAGES" "$pf_t")
log "postfix (stock, relaying): ${pf_t}s -> $pf_rate msg/s; CPU smtp-source $(source_cpu postfix "$pf_t")%"
stop_postfix "$PF_DIR"

start_postfix postfix-accept "$SINK_PORT" accept-only
log "postfix (accept-only, on hold): warm-up $WARMUP messages"
run_source postfix-accept-warmup "$PF_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
log "postfix (accept-only, on hold): smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
pfa_t=$(run_source postfix-accept "$PF_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
pfa_rate=$(rate "$MESSAGES" "$pfa_t")
log "postfix (accept-only, on hold): ${pfa_t}s -> $pfa_rate msg/s; CPU smtp-source $(source_cpu postfix-accept "$pfa_t")%"
stop_postfix "$PF_DIR"

# ---------------------------------------------------------------- summary --------------------
verdict() { awk -v r="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? (r >= t) : (r <= t); print ok ? "MET" : "MISSED" }'; }
r=$(ratio "$baton_rate" "$pf_rate")
ra=$(ratio "$baton_rate" "$pfa_rate")
echo "accept rate: baton $baton_rate msg/s vs stock postfix $pf_rate msg/s = ${r}x postfix; target >= 5x: $(verdict "$r" 5 '>=')"
echo "accept rate (like-for-like): baton $baton_rate msg/s vs postfix accept-only (on hold) $pfa_rate msg/s = ${ra}x"
echo "idle sessions: $IDLE sessions peak RSS (VmHWM) $(mib "$sess_hwm") MiB vs idle ingress $(mib "$idle_hwm") MiB = $(ratio "$sess_hwm" "$idle_hwm")x baseline; target <= 64 MiB: $(verdict "$(mib "$sess_hwm")" 64 '<=')"
echo "($(load_note) at end; messages=$MESSAGES sessions=$SESSIONS size=$SIZE baton-log-level=$BATON_LOG)"
