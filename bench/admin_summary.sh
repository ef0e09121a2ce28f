#!/usr/bin/env bash
# Operations API on a deep queue (issue 14): how long `baton queue summary` and `baton queue
# list` take over a backlog of N queued messages (no worker runs, so everything stays queued).
# Target: "a summary of a 100,000-message queue answers in under 2 s on this machine".
#
#   private nats-server -js  <-  baton config apply (one SendingPool, one RelayDomain)
#   smtp-source -s 20 -l 2048 (N/5 messages to each of user@d1.test ... user@d5.test)
#     -> baton ingress -> BATON_QUEUE
#   baton admin (token file, loopback)  <-  baton queue ... -o json {summary, list ...}
#
# Each operation runs RUNS times; the wall time (CLI start to exit, measured here) is reported
# as min / median, and for the summary also the server's own `elapsedMs` (the queue read).
# `queue status` is timed too, for reference (a CLI start, a connection and one small call).
#
# Usage: bench/admin_summary.sh   (from anywhere; env: N RUNS SESSIONS SIZE FILL_TIMEOUT
#        SETTLE_TIMEOUT BATON; BENCH_KEEP=1 keeps the work directory with every JSON answer)
cd "$(dirname "$0")/.."
BATON=${BATON:-target/debug/baton}
# One log line per accepted message is not what is measured here.
BATON_LOG=${BATON_LOG:-warn}
source bench/lib.sh

N=${N:-100000}
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
DOMAINS=5
FILL_TIMEOUT=${FILL_TIMEOUT:-120} # after smtp-source is done, until the stream holds N
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-30}
TARGET_MS=2000

die() { echo "admin_summary: $*" >&2; exit 1; }
[ "$N" -ge "$DOMAINS" ] 2>/dev/null || die "N must be a number >= $DOMAINS (got '$N')"
[ "$RUNS" -ge 1 ] 2>/dev/null || die "RUNS must be a number >= 1 (got '$RUNS')"
command -v jq >/dev/null || die "jq not found"
command -v openssl >/dev/null || die "openssl not found"
if [ ! -x "$BATON" ]; then
  [ "$BATON" = target/debug/baton ] || die "$BATON not found"
  log "building $BATON (cargo build -p baton)"
  cargo build -q -p baton >&2
fi

bench_init
nats_version=$(nats-server --version 2>&1 | head -1)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $nats_version; $(load_note)"

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# CPU time (user + sys) of a process so far, in ms.
cpu_ms() { awk -v h="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / h }' "/proc/$1/stat"; }
# stats V1 V2 ... -> "min median" (median of an even count: mean of the middle two)
stats() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%d %d", v[1], m }'
}

# ---------------------------------------------------------------- NATS and config ------------
start_nats admin
KEYRING="$bench_work/keyring"
"$BATON" --log-level warn keyring add --keyring "$KEYRING" >/dev/null \
  || die "baton keyring add failed"

CONFIG="$bench_work/baton.yaml"
cat >"$CONFIG" <<'EOF'
apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata:
  name: bench
spec:
  # No worker runs: nothing is delivered, the smarthost is never dialled.
  delivery: {mode: Smarthost, smarthosts: [{host: 127.0.0.1, port: 9, weight: 1, tls: Disabled}]}
  egress:
    - {ehloName: baton-bench.localhost, weight: 1}
  tls: {policy: Disabled}
  retry: {schedule: [10s, 1m, 5m], maxAge: 1d}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {name: example-com, namespace: default}
spec:
  domain: example.com
  pool: bench
  allowedSenders: ["*@example.com"]
  submission:
    networks: [127.0.0.0/8]
EOF
"$BATON" --log-level warn config apply --nats "$NATS_URL" --keyring "$KEYRING" "$CONFIG" \
  >"$bench_work/config-apply.out" 2>&1 \
  || { cat "$bench_work/config-apply.out" >&2; die "baton config apply failed"; }

# ---------------------------------------------------------------- ingress --------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$bench_work/tls.key" -out "$bench_work/tls.crt" >/dev/null 2>&1 \
  || die "openssl could not make a self-signed certificate"
INGRESS_PORT=$(free_port)
INGRESS_METRICS="http://127.0.0.1:$(free_port)"
"$BATON" --log-level "$BATON_LOG" ingress --nats "$NATS_URL" --keyring "$KEYRING" \
  --tls-cert "$bench_work/tls.crt" --tls-key "$bench_work/tls.key" \
  --hostname baton-bench.localhost \
  --listen-smtp "127.0.0.1:$INGRESS_PORT" \
  --listen-submission "127.0.0.1:$(free_port)" --listen-smtps "127.0.0.1:$(free_port)" \
  --listen-metrics "${INGRESS_METRICS#http://}" >"$bench_work/ingress.log" 2>&1 &
bench_pids+=($!)
wait_ready "$INGRESS_METRICS" || { tail -20 "$bench_work/ingress.log" >&2; die "ingress not ready"; }

# ---------------------------------------------------------------- admin API ------------------
# Started before the fill only so that `queue status` can tell when the stream holds N; it is
# idle until then.
TOKENS="$bench_work/admin-tokens"
TOKEN="$bench_work/admin-token"
"$BATON" --log-level warn admin-token add --tokens "$TOKENS" --name bench --permission admin \
  --out "$TOKEN" >"$bench_work/admin-token.out" 2>&1 \
  || { cat "$bench_work/admin-token.out" >&2; die "baton admin-token add failed"; }
ADMIN_PORT=$(free_port)
ADMIN="127.0.0.1:$ADMIN_PORT"
"$BATON" --log-level info admin --nats "$NATS_URL" --admin-tokens "$TOKENS" \
  --listen-admin "$ADMIN" >"$bench_work/admin.log" 2>&1 &
ADMIN_PID=$!
bench_pids+=("$ADMIN_PID")
wait_port "$ADMIN_PORT" 150 || { tail -20 "$bench_work/admin.log" >&2; die "baton admin not listening"; }

q() { "$BATON" --log-level warn queue --admin "$ADMIN" --token-file "$TOKEN" -o json "$@"; }
queued() { # messages in the queue stream, per the API (empty when it does not answer)
  q status 2>/dev/null | jq -r '.queue.messages // empty' 2>/dev/null
}
ok=""
for _ in $(seq 1 100); do
  [ -n "$(queued)" ] && { ok=1; break; }
  sleep 0.1
done
[ -n "$ok" ] || { q status >&2 || true; tail -20 "$bench_work/admin.log" >&2; die "the API's status has no queue.messages"; }

# ---------------------------------------------------------------- fill -----------------------
per=$((N / DOMAINS))
fill_t0=$(now)
for d in $(seq 1 "$DOMAINS"); do
  m=$per
  [ "$d" = "$DOMAINS" ] && m=$((N - per * (DOMAINS - 1)))
  log "fill: smtp-source -s $SESSIONS -l $SIZE -m $m -t user@d$d.test"
  t=$(run_source "fill-d$d" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$m" "user@d$d.test") \
    || die "smtp-source failed (see above)"
  log "fill: d$d.test: $m messages in ${t}s ($(awk -v m="$m" -v t="$t" 'BEGIN { printf "%.0f", m / t }') msg/s); stream holds $(queued)"
done
start=$(date +%s)
while :; do
  c=$(queued)
  [ -n "$c" ] && [ "$c" -ge "$N" ] && break
  if [ $(($(date +%s) - start)) -ge "$FILL_TIMEOUT" ]; then
    grep -h -v '^$' "$bench_work"/fill-d*.source.out | sort | uniq -c | sort -rn | head -5 >&2
    die "the stream holds ${c:-?} of $N messages ${FILL_TIMEOUT}s after smtp-source finished"
  fi
  sleep 0.2
done
fill_t=$(awk -v a="$fill_t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
[ "$c" -eq "$N" ] || log "warning: the stream holds $c messages, more than N=$N"
log "fill: $c messages queued in ${fill_t}s"

# Settle: the measurements start once nats-server is idle again (< 50 ms CPU in 1 s, at most
# SETTLE_TIMEOUT s), not while it still writes the fill out.
settle_start=$(date +%s)
while :; do
  n0=$(cpu_ms "$NATS_PID"); sleep 1; n1=$(cpu_ms "$NATS_PID")
  [ $((n1 - n0)) -lt 50 ] && break
  if [ $(($(date +%s) - settle_start)) -ge "$SETTLE_TIMEOUT" ]; then
    log "warning: nats-server still used $((n1 - n0)) ms CPU/s after ${SETTLE_TIMEOUT}s; measuring anyway"
    break
  fi
done

# ---------------------------------------------------------------- measure --------------------
# time_op NAME ARGS... -> RUNS runs of `baton queue -o json ARGS`; each output kept as
# $bench_work/NAME.RUN.json; min/median wall ms in WALL[NAME], of elapsedMs in SERVER[NAME].
# CPU[NAME]: mean CPU ms per run of the API process and of nats-server.
declare -A WALL SERVER RESULT WALL_ALL SERVER_ALL CPU
time_op() {
  local name=$1 t0 t1 out walls=() servers=() i a0 n0
  shift
  a0=$(cpu_ms "$ADMIN_PID"); n0=$(cpu_ms "$NATS_PID")
  for i in $(seq 1 "$RUNS"); do
    out="$bench_work/$name.$i.json"
    t0=$(ms_now)
    if ! q "$@" >"$out" 2>"$bench_work/$name.$i.err"; then
      cat "$bench_work/$name.$i.err" >&2
      die "baton queue $* failed (run $i)"
    fi
    t1=$(ms_now)
    walls+=($((t1 - t0)))
    case $name in
      summary)
        servers+=("$(jq -r '.elapsedMs // 0' "$out")")
        RESULT[$name]="scanned $(jq -r '.scanned // 0' "$out"); $(jq -r '[.places[]? | "\(.pool)/\(.place)=\(.messages // 0)"] | join(" ")' "$out"); domains $(jq -r '[.domains[]? | "\(.domain)=\(.messages // 0)"] | join(" ")' "$out")"
        ;;
      status)
        RESULT[$name]="queue.messages $(jq -r '.queue.messages' "$out")"
        ;;
      *)
        RESULT[$name]="$(jq -r '(.messages // []) | length' "$out") messages returned, next page token: $(jq -r 'if (.nextPageToken // "") == "" then "none" else "yes" end' "$out")"
        ;;
    esac
  done
  CPU[$name]="$(( ($(cpu_ms "$ADMIN_PID") - a0) / RUNS )) $(( ($(cpu_ms "$NATS_PID") - n0) / RUNS ))"
  WALL[$name]=$(stats "${walls[@]}")
  WALL_ALL[$name]="${walls[*]}"
  [ ${#servers[@]} -gt 0 ] && SERVER[$name]=$(stats "${servers[@]}")
  SERVER_ALL[$name]="${servers[*]}"
  log "$name: wall ms ${walls[*]}${servers:+; server elapsedMs ${servers[*]}}"
}
log "measuring ($RUNS runs each; $(load_note))"
time_op status status
time_op summary summary
time_op list_first list --limit 100
time_op list_d3 list --recipient d3.test --limit 100
time_op list_none list --recipient nobody.test --limit 100

# ---------------------------------------------------------------- results --------------------
row() { # NAME LABEL
  local w=${WALL[$1]} s=${SERVER[$1]:-} c=${CPU[$1]}
  printf '%-42s %7s %7s %14s %12s   %s\n' "$2" "${w% *}" "${w#* }" "${s:+${s% *} / ${s#* }}" \
    "${c% *} / ${c#* }" "${WALL_ALL[$1]}"
}
summary_med=${WALL[summary]#* }
verdict=$(awk -v m="$summary_med" -v t="$TARGET_MS" 'BEGIN { print (m < t) ? "met" : "NOT met" }')

echo
echo "== operations API on a queue of $c messages ($N asked; ${SIZE}-byte messages to $DOMAINS domains; no worker) =="
echo "machine: nproc $(nproc); $nats_version; baton $("$BATON" --version | awk '{print $2}') ($BATON); runs per operation: $RUNS"
echo "fill: ${fill_t}s (smtp-source -s $SESSIONS through baton ingress)"
printf '%-42s %7s %7s %14s %12s   %s\n' "operation (baton queue -o json ...)" "min ms" "med ms" \
  "server min/med" "cpu api/nats" "all wall ms"
row status "status (reference: CLI start + one call)"
row summary "summary"
row list_first "list --limit 100 (first page)"
row list_d3 "list --recipient d3.test --limit 100"
row list_none "list --recipient nobody.test (full scan)"
echo "(min/med ms: wall time of the CLI; server: the summary's elapsedMs; cpu: CPU ms per run of baton admin / nats-server)"
echo "summary: ${RESULT[summary]}"
echo "list first page: ${RESULT[list_first]}; d3.test: ${RESULT[list_d3]}; nobody.test: ${RESULT[list_none]}"
echo "target: summary of a $N-message queue in < ${TARGET_MS} ms: median wall ${summary_med} ms (server ${SERVER[summary]#* } ms) -> $verdict"
echo "($(load_note) at end)"
