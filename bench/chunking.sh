#!/usr/bin/env bash
# The worker's cost per message on a reused connection to a next hop that offers PIPELINING
# and CHUNKING: stock Postfix smtpd (a private instance, accept-only: each message is held, not
# delivered on). Reports the worker's CPU per message, and the system calls of the worker per
# message over a sample (strace -c; counts only, strace's own slowdown makes its timings
# meaningless). Run it with BATON=<binary> for two builds, alternating, to compare them.
#
# Usage: bench/chunking.sh   (from the repo root; env: MESSAGES (3000), SAMPLE (1000),
#        SESSIONS (10), SIZE (2048), BATON)
cd "$(dirname "$0")/.."
source bench/lib.sh

MESSAGES=${MESSAGES:-3000}
SAMPLE=${SAMPLE:-1000}
SESSIONS=${SESSIONS:-10}
SIZE=${SIZE:-2048}
command -v strace >/dev/null || { echo "strace not found (apt-get install strace)" >&2; exit 1; }

bench_init
hz=$(getconf CLK_TCK)
sent() { metric_sum "$WORKER_METRICS" 'baton_delivery_recipients_total{outcome="delivered"'; }
wait_sent() { # N TIMEOUT_S
  local start
  start=$(date +%s)
  until [ "$(sent)" -ge "$1" ]; do
    if [ $(($(date +%s) - start)) -ge "$2" ]; then
      echo "worker sent $(sent) of $1 after ${2}s" >&2
      return 1
    fi
    sleep 0.05
  done
}

log "machine: $(nproc) cores; $(nats-server --version); $(postconf -d mail_version 2>/dev/null); $BATON; $(load_note)"
start_postfix chunking 9 accept-only
start_nats chunking
baton_config chunking "$PF_PORT"
start_ingress chunking
start_worker chunking
run_source warmup "$INGRESS_PORT" "$SESSIONS" "$SIZE" 200 >/dev/null
wait_sent 200 120

c0=$(pid_ticks "$WORKER_PID")
base=$(sent)
t0=$(now)
run_source main "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES" >/dev/null
wait_sent $((base + MESSAGES)) 300
t1=$(now)
c1=$(pid_ticks "$WORKER_PID")
rate=$(awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v n="$MESSAGES" 'BEGIN { printf "%.3f", c / hz / n * 1000 }')
log "worker: $MESSAGES x $SIZE B through Postfix smtpd at $rate msg/s; worker CPU $cpu ms/msg"

strace -c -f -qq -o "$bench_work/strace.txt" -p "$WORKER_PID" &
st=$!
sleep 1
base=$(sent)
run_source sample "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$SAMPLE" >/dev/null
wait_sent $((base + SAMPLE)) 300
kill -INT "$st"
wait "$st" 2>/dev/null || true
echo
echo "== worker per message to Postfix smtpd (PIPELINING, CHUNKING), $SIZE B ($(date -u +%FT%TZ); $(load_note))"
echo "rate $rate msg/s, worker CPU $cpu ms/msg; system calls per message over $SAMPLE messages:"
awk -v n="$SAMPLE" '$NF ~ /^(sendto|recvfrom|write|writev|read|epoll_wait|futex|sendmsg|recvmsg)$/ {
  printf "  %-10s %6.2f\n", $NF, $4 / n }' "$bench_work/strace.txt"
