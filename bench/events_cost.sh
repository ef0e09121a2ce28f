#!/usr/bin/env bash
# Cost of delivery events (issue 15): Baton end to end with events ON versus OFF, same machine.
#   smtp-source -s 20 -l 2048 -m 20000 -f app@example.com -t x@dest.test HOST:PORT
#   -> Baton (nats-server -js + `baton ingress` + one `baton worker`, release build) -> smtp-sink
# ON  = the default (BATON_EVENTS=true): the ingress publishes `accepted`, the worker `delivered`
#       per recipient, to the BATON_EVENTS stream in the background.
# OFF = BATON_EVENTS=false on both the ingress and the worker.
# Each measurement starts a fresh nats-server (own store), sink, `config apply`, ingress and
# worker, sends WARMUP messages, then MESSAGES, and measures like bench/e2e_vs_postfix.sh:
# end-to-end rate = messages at the sink / time from the start of smtp-source until the last one
# arrives. CPU per message of ingress, worker and nats-server comes from /proc/<pid>/stat
# (utime + stime) over the same window, extended until the event counters settle.
# Modes alternate ON, OFF, ON, OFF, ... (ROUNDS rounds of one each). The verdict compares the
# medians: cost = 1 - median(ON) / median(OFF), aim < 10 %.
# After every run the events are counted from the ingress + worker /metrics
# (baton_events_total{result="stored"|"failed"}) and from nats-server's monitoring endpoint
# (/jsz: messages and bytes in the BATON_EVENTS stream).
#
# Usage: bench/events_cost.sh   (from the repo root; env: ROUNDS MESSAGES SESSIONS SIZE WARMUP
#        FIRST=on|off BATON_LOG BENCH_KEEP)
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-2}
MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
FIRST=${FIRST:-on}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}

bench_init
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(load_note)"

HZ=$(getconf CLK_TCK)
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# us_per_msg TICKS0 TICKS1 N -> CPU microseconds per message.
us_per_msg() { awk -v a="$1" -v b="$2" -v n="$3" -v h="$HZ" 'BEGIN { printf "%.0f", 1e6 * (b - a) / h / n }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# events_count METRICS_URL RESULT -> sum of baton_events_total{...,result="RESULT"} (label order
# does not matter).
events_count() {
  curl -fs "$1/metrics" | awk -v r="result=\"$2\"" \
    'index($0, "baton_events_total{") == 1 && index($0, r) { s += $NF } END { printf "%d", s }'
}
events_all() { # -> stored+failed over ingress and worker
  echo $(( $(events_count "$INGRESS_METRICS" stored) + $(events_count "$WORKER_METRICS" stored) \
    + $(events_count "$INGRESS_METRICS" failed) + $(events_count "$WORKER_METRICS" failed) ))
}

# Like lib.sh's start_nats, plus the monitoring endpoint (-m) to read the stream's size.
# -> sets NATS_URL, NATS_PID, NATS_MON.
start_nats_mon() {
  local name=$1 port mport
  port=$(free_port)
  mport=$(free_port)
  mkdir -p "$bench_work/$name.nats"
  nats-server -js -a 127.0.0.1 -p "$port" -m "$mport" -sd "$bench_work/$name.nats" \
    >"$bench_work/$name.nats.log" 2>&1 &
  NATS_PID=$!
  bench_pids+=("$NATS_PID")
  NATS_URL="nats://127.0.0.1:$port"
  NATS_MON="http://127.0.0.1:$mport"
  wait_port "$port"
}

# stream_size STREAM -> "MESSAGES BYTES" of a stream ("0 0" if absent).
stream_size() {
  curl -fs "$NATS_MON/jsz?accounts=true&streams=true" | python3 -c '
import json, sys
want = sys.argv[1]
d = json.load(sys.stdin)
for a in d.get("account_details") or []:
    for s in a.get("stream_detail") or []:
        if s.get("name") == want:
            st = s.get("state", {})
            print(st.get("messages", 0), st.get("bytes", 0))
            sys.exit(0)
print(0, 0)' "$1"
}

results=()  # "mode rate us_ingress us_worker us_nats stored failed stream_msgs stream_bytes"
on_rates=""
off_rates=""

# measure LABEL MODE(on|off)
measure() {
  local label=$1 mode=$2 flag sink_out c_i c_w c_n c_i1 c_w1 c_n1 t0 t_last t accept_t count r
  local prev cur stored failed ss
  [ "$mode" = on ] && flag=true || flag=false
  start_sink "$label"
  sink_out=$SINK_OUT
  local sink_pid=${bench_pids[-1]}
  start_nats_mon "$label"
  baton_config "$label" "$SINK_PORT"
  BATON_EVENTS=$flag start_ingress "$label"
  BATON_EVENTS=$flag start_worker "$label"
  run_source "$label-warmup" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null
  wait_sink "$sink_out" "$WARMUP" 120 >/dev/null
  sleep 1

  log "$label: events $mode: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
  c_i=$(cpu_ticks "$INGRESS_PID"); c_w=$(cpu_ticks "$WORKER_PID"); c_n=$(cpu_ticks "$NATS_PID")
  t0=$(now)
  accept_t=$(run_source "$label" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
  t_last=$(wait_sink "$sink_out" $((WARMUP + MESSAGES)) "$DRAIN_TIMEOUT")
  t=$(since "$t0" "$t_last")
  # Background publishing may still be finishing: wait (both modes alike) until the event
  # counters stop moving, so its CPU is counted, then read the CPU.
  prev=-1
  for _ in $(seq 1 40); do
    sleep 0.5
    cur=$(events_all)
    [ "$cur" = "$prev" ] && break
    prev=$cur
  done
  c_i1=$(cpu_ticks "$INGRESS_PID"); c_w1=$(cpu_ticks "$WORKER_PID"); c_n1=$(cpu_ticks "$NATS_PID")
  count=$(( $(sink_count "$sink_out") - WARMUP ))
  r=$(rate "$count" "$t")
  stored=$(( $(events_count "$INGRESS_METRICS" stored) + $(events_count "$WORKER_METRICS" stored) ))
  failed=$(( $(events_count "$INGRESS_METRICS" failed) + $(events_count "$WORKER_METRICS" failed) ))
  ss=$(stream_size BATON_EVENTS)
  log "$label: accepted in ${accept_t}s ($(rate "$MESSAGES" "$accept_t") msg/s); last at sink after ${t}s; sink $count -> $r msg/s; events stored $stored failed $failed; stream BATON_EVENTS: $ss (msgs bytes)"
  [ "$count" -eq "$MESSAGES" ] || log "$label: WARNING sink counted $count, expected $MESSAGES"
  results+=("$label $mode $r $(us_per_msg "$c_i" "$c_i1" "$count") $(us_per_msg "$c_w" "$c_w1" "$count") $(us_per_msg "$c_n" "$c_n1" "$count") $stored $failed $ss")
  if [ "$mode" = on ]; then on_rates+=" $r"; else off_rates+=" $r"; fi

  kill "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" "$sink_pid" 2>/dev/null || true
  wait "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" "$sink_pid" 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$bench_work/$label.nats"
}

if [ "$FIRST" = on ]; then order=(on off); else order=(off on); fi
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${order[@]}"; do
    measure "r$round-$mode" "$mode"
  done
done

# ---------------------------------------------------------------- summary --------------------
expected=$(( 2 * (WARMUP + MESSAGES) ))
echo
echo "delivery events on vs off: messages=$MESSAGES sessions=$SESSIONS size=$SIZE warmup=$WARMUP rounds=$ROUNDS baton-log-level=$BATON_LOG"
printf '%-8s %-6s %9s %12s %11s %11s %10s %14s %13s %12s %10s\n' \
  run events "msg/s" "ingress us/m" "worker us/m" "nats us/m" "total us/m" "events stored" "events failed" "stream msgs" "stream MB"
for line in "${results[@]}"; do
  read -r label mode r ui uw un st fa sm sb <<<"$line"
  printf '%-8s %-6s %9s %12s %11s %11s %10s %14s %13s %12s %10s\n' \
    "$label" "$mode" "$r" "$ui" "$uw" "$un" $((ui + uw + un)) "$st" "$fa" "$sm" \
    "$(awk -v b="$sb" 'BEGIN { printf "%.1f", b / 1048576 }')"
done
echo "(us/m = CPU microseconds per message, user+sys, from /proc/<pid>/stat; events are counted over warm-up + measured messages: ON expects $expected = 1 accepted + 1 delivered per message, OFF 0)"
med_on=$(echo "$on_rates" | median)
med_off=$(echo "$off_rates" | median)
r=$(ratio "$med_on" "$med_off")
cost=$(awk -v a="$med_on" -v b="$med_off" 'BEGIN { printf "%.1f", 100 * (1 - a / b) }')
ok=$(awk -v c="$cost" 'BEGIN { print (c < 10) ? "met" : "NOT met" }')
echo "median msg/s: on $med_on, off $med_off; ratio on/off $r; cost of events ${cost} % (aim < 10 %: $ok)"
echo "($(load_note) at end)"
