#!/usr/bin/env bash
# Issue 17: CPU per message, large messages, DKIM and memory — every figure side by side in one
# run on this machine, against the stated targets.
#
#   smtp-source -s 20 -l SIZE -m N -f app@example.com -t x@dest.test  into
#   (direct)  smtp-sink itself                                   (the generator + sink ceiling)
#   (postfix) a private stock Postfix relaying to smtp-sink
#   (baton)   nats-server -js + `baton ingress` + one `baton worker` (release build) -> smtp-sink
#   (dkim)    the same with the RelayDomain signing with an RSA-2048 key
# at 2 KiB and 100 KiB. Rate = messages at the sink / time from the start of smtp-source until
# the last one arrived. CPU per message: whole machine (busy ticks of /proc/stat, generator and
# sink included) and, for Baton, each process's own utime+stime from /proc/PID/stat.
# Then: RSA-2048 signing (`cargo bench -p baton-ingress --bench dkim`) against
# `openssl speed rsa2048`; the accept rate of `baton dev` (everything in one process, delivery
# running) against stock Postfix's accept rate while delivering; ingress RSS with 1,000 sessions
# part-way through DATA of 100 KiB messages; worker RSS draining a 100,000-message backlog.
# "floor": what the 2 KiB CPU target leaves for Baton's own work once the bytes on the wire
# (smtp-sink, smtp-source -d) and nats-server's least work per message are paid (see below).
#
# Usage: bench/cpu_per_message.sh   (from the repo root; env: MESSAGES (20000 at 2 KiB),
#        LARGE_MESSAGES (4000 at 100 KiB), SESSIONS (20), BACKLOG (100000), MIDDATA (1000),
#        PARTS (all: "direct postfix baton dkim floor sign dev memory"))
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-20000}
LARGE_MESSAGES=${LARGE_MESSAGES:-4000}
SESSIONS=${SESSIONS:-20}
BACKLOG=${BACKLOG:-100000}
MIDDATA=${MIDDATA:-1000}
WARMUP=${WARMUP:-200}
PARTS=${PARTS:-"direct postfix baton dkim floor sign dev memory"}
SMALL=2048
LARGE=102400

bench_init
hz=$(getconf CLK_TCK)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nats-server --version); $(load_note)"
want() { [[ " $PARTS " == *" $1 "* ]]; }
count_for() { if [ "$1" = "$SMALL" ]; then echo "$MESSAGES"; else echo "$LARGE_MESSAGES"; fi; }
label_of() { if [ "$1" = "$SMALL" ]; then echo "2KiB"; else echo "100KiB"; fi; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

declare -A RATE ACCEPT MACHINE OWN DETAIL SPLIT PROC_MS

# measure KEY PORT SIZE SINK_OUT [PID...] -> RATE[KEY] (msg/s end to end), ACCEPT[KEY] (msg/s
# accepted by the relay), MACHINE[KEY] (ms of busy CPU per message, whole machine), OWN[KEY]
# (ms per message of the listed processes), DETAIL[KEY] (per process), SPLIT[KEY] (per process,
# user + kernel), PROC_MS[KEY:NAME].
measure() {
  local key=$1 port=$2 size=$3 out=$4 n base t0 t_last accept_t b0 b1 p
  shift 4
  n=$(count_for "$size")
  local -a pids=("$@") c0=() c1=() u0=() u1=()
  log "$key: smtp-source -s $SESSIONS -l $size -m $n ($(load_note))"
  base=$(sink_count "$out")
  for p in "${pids[@]}"; do c0+=("$(pid_ticks "$p")"); u0+=("$(pid_user_ticks "$p")"); done
  b0=$(busy_ticks)
  t0=$(now)
  accept_t=$(run_source "$key" "$port" "$SESSIONS" "$size" "$n")
  t_last=$(wait_sink "$out" $((base + n)) 900)
  b1=$(busy_ticks)
  for p in "${pids[@]}"; do c1+=("$(pid_ticks "$p")"); u1+=("$(pid_user_ticks "$p")"); done
  RATE[$key]=$(calc "%.0f" "$n / ($t_last - $t0)")
  ACCEPT[$key]=$(calc "%.0f" "$n / $accept_t")
  MACHINE[$key]=$(calc "%.3f" "($b1 - $b0) / $hz / $n * 1000")
  local own=0 detail="" split="" i ms us
  for i in "${!pids[@]}"; do
    ms=$(calc "%.3f" "(${c1[$i]} - ${c0[$i]}) / $hz / $n * 1000")
    us=$(calc "%.3f" "(${u1[$i]} - ${u0[$i]}) / $hz / $n * 1000")
    own=$(calc "%.3f" "$own + $ms")
    detail+="${PROC_NAMES[$i]} $ms "
    split+="${PROC_NAMES[$i]} ${us}+$(calc "%.3f" "$ms - $us") "
    PROC_MS[$key:${PROC_NAMES[$i]}]=$ms
  done
  OWN[$key]=$own
  DETAIL[$key]=$detail
  SPLIT[$key]=$split
  log "$key: ${RATE[$key]} msg/s end to end (accepted at ${ACCEPT[$key]} msg/s); machine ${MACHINE[$key]} ms CPU/msg${detail:+; own ${own} ms/msg: $detail}"
}

warm() { # PORT SINK_OUT
  local base
  base=$(sink_count "$2")
  run_source warmup "$1" "$SESSIONS" "$SMALL" "$WARMUP" >/dev/null
  wait_sink "$2" $((base + WARMUP)) 120 >/dev/null
}

# ---------------------------------------------------------------- direct ---------------------
if want direct; then
  start_sink direct
  PROC_NAMES=()
  for size in $SMALL $LARGE; do measure "direct-$(label_of $size)" "$SINK_PORT" "$size" "$SINK_OUT"; done
fi

# ---------------------------------------------------------------- postfix --------------------
if want postfix; then
  start_sink postfix
  pf_sink=$SINK_OUT
  start_postfix postfix "$SINK_PORT"
  warm "$PF_PORT" "$pf_sink"
  PROC_NAMES=()
  for size in $SMALL $LARGE; do measure "postfix-$(label_of $size)" "$PF_PORT" "$size" "$pf_sink"; done
  stop_postfix "$PF_DIR"
fi

# ---------------------------------------------------------------- baton ----------------------
export BATON_KEYRING="$bench_work/keyring"
"$BATON" --log-level warn keyring add --keyring "$BATON_KEYRING" >/dev/null
baton_stack() { # NAME
  start_sink "$1"
  STACK_SINK=$SINK_OUT
  start_nats "$1"
  baton_config "$1" "$SINK_PORT"
  start_ingress "$1"
  start_worker "$1"
  warm "$INGRESS_PORT" "$STACK_SINK"
  PROC_NAMES=(ingress worker nats)
}
stop_stack() { kill "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true; wait "$WORKER_PID" "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true; }

if want baton; then
  baton_stack baton
  for size in $SMALL $LARGE; do
    measure "baton-$(label_of $size)" "$INGRESS_PORT" "$size" "$STACK_SINK" "$INGRESS_PID" "$WORKER_PID" "$NATS_PID"
  done
  stop_stack
fi
if want dkim; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$bench_work/dkim.pem" 2>/dev/null
  DKIM_PEM="$bench_work/dkim.pem" baton_stack dkim
  for size in $SMALL $LARGE; do
    measure "dkim-$(label_of $size)" "$INGRESS_PORT" "$size" "$STACK_SINK" "$INGRESS_PID" "$WORKER_PID" "$NATS_PID"
  done
  stop_stack
fi

# ---------------------------------------------------------------- floor ----------------------
# What the 2 KiB CPU target leaves for Baton's own work. The bytes on the wire cost the same in
# any relay: Postfix's smtp-sink receiving one message per connection (what the ingress does)
# and smtp-source sending over kept connections (what the worker does), each process's user +
# kernel CPU per message. nats-server's share is measured with Baton asking the least of it (one
# stored message, one delivery, one acknowledgement: events off), in the bare stack (events off,
# warn logging, one runtime thread), whose processes are reported split into user + kernel.
if want floor; then
  start_sink floor
  floor_sink_pid=$SINK_PID
  floor_u0=$(pid_user_ticks "$floor_sink_pid")
  floor_c0=$(pid_ticks "$floor_sink_pid")
  log "floor: smtp-source -s $SESSIONS -l $SMALL -m $MESSAGES into smtp-sink ($(load_note))"
  run_source floor-recv "$SINK_PORT" "$SESSIONS" "$SMALL" "$MESSAGES" >/dev/null
  wait_sink "$SINK_OUT" "$MESSAGES" 300 >/dev/null
  floor_u1=$(pid_user_ticks "$floor_sink_pid")
  floor_c1=$(pid_ticks "$floor_sink_pid")
  FLOOR_RECV=$(calc "%.3f" "($floor_c1 - $floor_c0) / $hz / $MESSAGES * 1000")
  FLOOR_RECV_SPLIT="$(calc "%.3f" "($floor_u1 - $floor_u0) / $hz / $MESSAGES * 1000")+$(calc "%.3f" "($floor_c1 - $floor_u1 - $floor_c0 + $floor_u0) / $hz / $MESSAGES * 1000")"
  log "floor: smtp-source -d (connections kept) -s $SESSIONS -l $SMALL -m $MESSAGES into smtp-sink"
  SOURCE_FLAGS=-d run_source floor-send "$SINK_PORT" "$SESSIONS" "$SMALL" "$MESSAGES" >/dev/null
  read -r floor_su floor_ss <"$bench_work/floor-send.source.cpu"
  FLOOR_SEND=$(calc "%.3f" "($floor_su + $floor_ss) / $MESSAGES * 1000")
  FLOOR_SEND_SPLIT="$(calc "%.3f" "$floor_su / $MESSAGES * 1000")+$(calc "%.3f" "$floor_ss / $MESSAGES * 1000")"
  log "floor: SMTP receive ${FLOOR_RECV} ms/msg (user+kernel ${FLOOR_RECV_SPLIT}), SMTP send ${FLOOR_SEND} ms/msg (${FLOOR_SEND_SPLIT})"
  BATON_EVENTS=false BATON_RUNTIME_THREADS=1 BATON_LOG=warn baton_stack floor
  measure "bare-2KiB" "$INGRESS_PORT" "$SMALL" "$STACK_SINK" "$INGRESS_PID" "$WORKER_PID" "$NATS_PID"
  stop_stack
fi

# ---------------------------------------------------------------- signing --------------------
if want sign; then
  log "openssl speed -seconds 3 rsa2048 ($(load_note))"
  ossl_us=$(openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ { printf "%.1f", $4 * 1e6 }')
  log "cargo bench -p baton-ingress --bench dkim"
  DKIM_BENCH_SECS=3 cargo bench -q -p baton-ingress --bench dkim 2>/dev/null >"$bench_work/dkim.bench"
  cat "$bench_work/dkim.bench" >&2
  baton_us=$(awk '$1 == "2" && $2 == "KiB" && $3 == "rsa-2048" { print $5 }' "$bench_work/dkim.bench")
  log "RSA-2048: openssl ${ossl_us} us/sign; Baton ${baton_us} us per 2 KiB message signed (hashing included)"
fi

# ---------------------------------------------------------------- baton dev -----------------
if want dev; then
  start_sink dev
  dev_sink=$SINK_OUT
  dev_port=$(free_port)
  dev_metrics=$(free_port)
  BATON_CONFIG_APPLY=0 baton_config dev "$SINK_PORT"
  "$BATON" --log-level "$BATON_LOG" dev --config "$BATON_YAML" --data-dir "$bench_work/dev.data" \
    --listen-smtp "127.0.0.1:$dev_port" --listen-submission "127.0.0.1:$(free_port)" \
    --listen-smtps "127.0.0.1:$(free_port)" --listen-metrics "127.0.0.1:$dev_metrics" \
    --hostname baton-bench.localhost >"$bench_work/dev.log" 2>&1 &
  bench_pids+=($!)
  wait_ready "http://127.0.0.1:$dev_metrics"
  warm "$dev_port" "$dev_sink"
  PROC_NAMES=()
  measure "dev-2KiB" "$dev_port" "$SMALL" "$dev_sink"
fi

# ---------------------------------------------------------------- memory --------------------
mib() { calc "%.1f" "$1 / 1024"; }
if want memory; then
  start_sink mem
  mem_sink=$SINK_OUT
  # gctrace: nats-server logs each garbage collection, with the live heap it left.
  GODEBUG=gctrace=1 start_nats mem
  baton_config mem "$SINK_PORT"
  start_ingress mem
  idle_rss=$(vm_kib "$INGRESS_PID" VmRSS)
  log "memory: $MIDDATA sessions each 51,200 bytes into DATA of a 100 KiB message"
  python3 bench/idle_sessions.py 127.0.0.1 "$INGRESS_PORT" "$MIDDATA" --mid-data 51200 --hold 120 \
    >"$bench_work/middata.out" 2>&1 &
  md_pid=$!
  bench_pids+=("$md_pid")
  for _ in $(seq 1 1200); do grep -q '^ready' "$bench_work/middata.out" && break; kill -0 "$md_pid" 2>/dev/null || break; sleep 0.1; done
  sleep 1
  mid_rss=$(vm_kib "$INGRESS_PID" VmRSS)
  mid_hwm=$(vm_kib "$INGRESS_PID" VmHWM)
  log "memory: ingress idle $(mib "$idle_rss") MiB; with sessions ($(head -1 "$bench_work/middata.out")): VmRSS $(mib "$mid_rss") MiB, VmHWM $(mib "$mid_hwm") MiB"
  kill "$md_pid" 2>/dev/null || true
  wait "$md_pid" 2>/dev/null || true

  nats_before=$(vm_kib "$NATS_PID" VmRSS)
  log "memory: queueing $BACKLOG x 2 KiB with no worker"
  run_source backlog "$INGRESS_PORT" "$SESSIONS" "$SMALL" "$BACKLOG" >/dev/null
  start_worker mem
  peak=0
  t0=$(now)
  while [ "$(sink_count "$mem_sink")" -lt "$BACKLOG" ]; do
    r=$(vm_kib "$WORKER_PID" VmRSS)
    [ "$r" -gt "$peak" ] && peak=$r
    if [ "$(calc "%d" "$(now) - $t0")" -gt 900 ]; then log "memory: backlog not drained after 900 s"; break; fi
    sleep 0.2
  done
  worker_hwm=$(vm_kib "$WORKER_PID" VmHWM)
  log "memory: worker drained $BACKLOG in $(calc "%.1f" "$(now) - $t0") s; VmRSS peak (sampled) $(mib "$peak") MiB, VmHWM $(mib "$worker_hwm") MiB"
  # The queue is empty again; what stays is the event stream (each message's events and its
  # Message-ID index record, kept for 7 days by default).
  nats_after=$(vm_kib "$NATS_PID" VmRSS)
  nats_per=$(calc "%.0f" "($nats_after - $nats_before) * 1024 / $BACKLOG")
  nats_live=$(grep '^gc ' "$bench_work/mem.nats.log" | tail -1 | sed -n 's/.*->\([0-9]*\) MB,.*/\1/p')
  log "memory: nats-server VmRSS $(mib "$nats_before") MiB before the backlog, $(mib "$nats_after") MiB once drained: $nats_per bytes per relayed message (live heap at its last collection: ${nats_live:-?} MB)"
fi

# ---------------------------------------------------------------- summary -------------------
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print ok ? "MET" : "MISSED" }'; }
echo
echo "== issue 17 targets ($(date -u +%FT%TZ), $(nproc) cores; $(load_note))"
if [ -n "${OWN[baton-2KiB]:-}" ]; then
  echo "2 KiB: Baton's processes ${OWN[baton-2KiB]} ms CPU/msg (${DETAIL[baton-2KiB]}); target <= 0.30: $(verdict "${OWN[baton-2KiB]}" 0.30 '<=')"
fi
if [ -n "${RATE[baton-2KiB]:-}" ] && [ -n "${RATE[postfix-2KiB]:-}" ]; then
  r=$(ratio "${RATE[baton-2KiB]}" "${RATE[postfix-2KiB]}")
  echo "2 KiB end to end: Baton ${RATE[baton-2KiB]} vs Postfix ${RATE[postfix-2KiB]} msg/s = ${r}x; target >= 6x: $(verdict "$r" 6 '>=')"
fi
if [ -n "${RATE[baton-2KiB]:-}" ] && [ -n "${RATE[direct-2KiB]:-}" ]; then
  r=$(calc "%.1f" "100 * ${RATE[baton-2KiB]} / ${RATE[direct-2KiB]}")
  echo "2 KiB: Baton ${RATE[baton-2KiB]} vs direct smtp-source->smtp-sink ${RATE[direct-2KiB]} msg/s = ${r} %; target >= 45 %: $(verdict "$r" 45 '>=')"
fi
if [ -n "${RATE[baton-100KiB]:-}" ] && [ -n "${RATE[postfix-100KiB]:-}" ]; then
  r=$(ratio "${RATE[baton-100KiB]}" "${RATE[postfix-100KiB]}")
  echo "100 KiB end to end: Baton ${RATE[baton-100KiB]} vs Postfix ${RATE[postfix-100KiB]} msg/s = ${r}x; target >= 3x: $(verdict "$r" 3 '>=')"
  echo "100 KiB: Baton's processes ${OWN[baton-100KiB]} ms CPU/msg (${DETAIL[baton-100KiB]}); target <= 1.0: $(verdict "${OWN[baton-100KiB]}" 1.0 '<=')"
fi
if [ -n "${FLOOR_RECV:-}" ] && [ -n "${OWN[bare-2KiB]:-}" ]; then
  nats_bare=${PROC_MS[bare-2KiB:nats]}
  floor=$(calc "%.3f" "$FLOOR_RECV + $FLOOR_SEND + $nats_bare")
  echo "2 KiB floor: SMTP receive, a connection per message (smtp-sink) ${FLOOR_RECV} + SMTP send over kept connections (smtp-source -d) ${FLOOR_SEND} + nats-server storing, delivering and deleting the message (events off) ${nats_bare} = ${floor} ms/msg; the 0.30 target leaves $(calc "%.3f" "0.30 - $floor") ms for all else Baton does per message"
  echo "  bare stack (events off, warn logging, one runtime thread): ${OWN[bare-2KiB]} ms/msg, user+kernel: ${SPLIT[bare-2KiB]}; smtp-sink ${FLOOR_RECV_SPLIT}, smtp-source -d ${FLOOR_SEND_SPLIT}"
  if [ -n "${SPLIT[baton-2KiB]:-}" ]; then
    echo "  as shipped (events on, info logging): ${OWN[baton-2KiB]} ms/msg, user+kernel: ${SPLIT[baton-2KiB]}"
  fi
fi
if [ -n "${baton_us:-}" ] && [ -n "${ossl_us:-}" ]; then
  r=$(ratio "$baton_us" "$ossl_us")
  echo "RSA-2048: Baton ${baton_us} us per signed 2 KiB message vs openssl ${ossl_us} us per signature = ${r}x; target <= 1.3x: $(verdict "$r" 1.3 '<=')"
fi
if [ -n "${RATE[dkim-2KiB]:-}" ] && [ -n "${RATE[baton-2KiB]:-}" ]; then
  r=$(calc "%.1f" "100 * ${RATE[dkim-2KiB]} / ${RATE[baton-2KiB]}")
  echo "2 KiB with RSA-2048 DKIM: ${RATE[dkim-2KiB]} vs unsigned ${RATE[baton-2KiB]} msg/s = ${r} %; target >= 60 %: $(verdict "$r" 60 '>=') (own ${OWN[dkim-2KiB]} ms/msg: ${DETAIL[dkim-2KiB]})"
  echo "100 KiB with RSA-2048 DKIM: ${RATE[dkim-100KiB]} msg/s (own ${OWN[dkim-100KiB]} ms/msg: ${DETAIL[dkim-100KiB]})"
fi
if [ -n "${ACCEPT[dev-2KiB]:-}" ] && [ -n "${ACCEPT[postfix-2KiB]:-}" ]; then
  r=$(ratio "${ACCEPT[dev-2KiB]}" "${ACCEPT[postfix-2KiB]}")
  echo "accept rate while delivering: baton dev ${ACCEPT[dev-2KiB]} vs stock Postfix ${ACCEPT[postfix-2KiB]} msg/s = ${r}x; target >= 5x: $(verdict "$r" 5 '>=')"
fi
if [ -n "${mid_rss:-}" ]; then
  echo "memory: ingress VmRSS $(mib "$mid_rss") MiB (VmHWM $(mib "$mid_hwm")) with $MIDDATA sessions mid-DATA (idle $(mib "$idle_rss") MiB); worker VmHWM $(mib "$worker_hwm") MiB draining $BACKLOG (reported); nats-server +$nats_per bytes VmRSS per relayed message once drained (live heap ${nats_live:-?} MB)"
fi
for k in direct-2KiB direct-100KiB postfix-2KiB postfix-100KiB baton-2KiB baton-100KiB dkim-2KiB dkim-100KiB bare-2KiB dev-2KiB; do
  [ -n "${RATE[$k]:-}" ] && echo "  $k: ${RATE[$k]} msg/s end to end, accepted ${ACCEPT[$k]} msg/s, machine ${MACHINE[$k]} ms CPU/msg${DETAIL[$k]:+, ${DETAIL[$k]}}"
done
echo "(load at the end: $(load_note))"
