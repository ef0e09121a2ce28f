#!/usr/bin/env bash
# Cost of cluster-wide limits (issue 18): the ingress accept rate with shared inbound budgets on
# the RelayDomain versus none, same machine, same run.
#   smtp-source -s 20 -l 2048 -m 10000 -f app@example.com -t x@dest.test HOST:PORT
#   -> `baton ingress` (release build) + `nats-server -js`, NO worker (like
#      bench/ingress_vs_postfix.sh: only acceptance is measured; each 250 means the message is
#      in JetStream)
# OFF = the RelayDomain has no budgets.
# ON  = the RelayDomain has budgets per minute, hour and day for messages and recipients, and a
#       per-client-network budget (LIMITS, high enough that nothing is refused): every MAIL takes
#       a unit from 4 budgets and every RCPT from 3, shared through the `baton-limits` KV bucket
#       (a KV compare-and-set per chunk of clamp(limit/64, 1, 1000) units per budget and
#       window, docs/limits.md).
# Each measurement starts a fresh nats-server (own store), `config apply` and ingress, sends
# WARMUP messages, then MESSAGES. Accept rate = MESSAGES / wall time of smtp-source. CPU per
# message: utime+stime from /proc/PID/stat of the ingress and nats-server over smtp-source's
# run, and the whole machine's busy ticks (/proc/stat). Modes alternate OFF, ON, OFF, ON ...
# (ROUNDS rounds); the summary compares the medians. After each ON run the refusals
# (baton_limit_refusals_total) and fallback decisions (baton_limit_fallback_total) are read
# from the ingress's /metrics: both must be 0.
#
# Usage: bench/limits_cost.sh   (from the repo root; env: ROUNDS (3) MESSAGES (10000) SESSIONS
#        (20) SIZE (2048) WARMUP (200) PER_MINUTE (64000) BATON BATON_LOG BENCH_KEEP)
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
PER_MINUTE=${PER_MINUTE:-64000}
LIMITS="{messagesPerMinute: $PER_MINUTE, messagesPerHour: $((PER_MINUTE * 60)), messagesPerDay: $((PER_MINUTE * 1440)), recipientsPerMinute: $PER_MINUTE, recipientsPerHour: $((PER_MINUTE * 60)), recipientsPerDay: $((PER_MINUTE * 1440)), perClient: {messagesPerMinute: $PER_MINUTE}}"

bench_init
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(load_note)"

HZ=$(getconf CLK_TCK)
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
ms_per_msg() { calc "%.3f" "($2 - $1) / $HZ / $3 * 1000"; } # TICKS0 TICKS1 N
median() { # [PRINTF FORMAT, default %.1f] < values
  tr ' ' '\n' | grep -v '^$' | sort -g | awk -v f="${1:-%.1f}" '{ v[NR] = $1 } END { if (NR % 2) printf f, v[(NR + 1) / 2]; else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

results=() # "label mode accept_rate ingress_ms nats_ms own_ms machine_ms refusals fallback"
off_rates=""
on_rates=""
off_own=""
on_own=""

measure() { # LABEL MODE(on|off)
  local label=$1 mode=$2 accept_t r ci cn b0 ci1 cn1 b1 own refused="-" fallback="-"
  start_nats "$label"
  start_sink "$label-unused"
  BATON_CONFIG_APPLY=0 baton_config "$label" "$SINK_PORT"
  if [ "$mode" = on ]; then
    # The RelayDomain's budgets, after its submission networks.
    sed -i "s|^    networks: \[127.0.0.0/8\]|&\n  limits: $LIMITS|" "$BATON_YAML"
    grep -q '^  limits: ' "$BATON_YAML" || { echo "limits not inserted into $BATON_YAML" >&2; exit 1; }
  fi
  "$BATON" --log-level warn config apply --nats "$NATS_URL" "$BATON_YAML" >&2
  start_ingress "$label"
  run_source "$label-warmup" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null

  log "$label: limits $mode: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
  ci=$(pid_ticks "$INGRESS_PID"); cn=$(pid_ticks "$NATS_PID"); b0=$(busy_ticks)
  accept_t=$(run_source "$label" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
  ci1=$(pid_ticks "$INGRESS_PID"); cn1=$(pid_ticks "$NATS_PID"); b1=$(busy_ticks)
  r=$(rate "$MESSAGES" "$accept_t")
  local accepted
  accepted=$(metric_sum "$INGRESS_METRICS" baton_ingress_messages_accepted_total)
  if [ "$accepted" -ne $((WARMUP + MESSAGES)) ]; then
    log "$label: WARNING the ingress accepted $accepted, expected $((WARMUP + MESSAGES)) (smtp-source output: $bench_work/$label.source.out)"
  fi
  local mi mn mm
  mi=$(ms_per_msg "$ci" "$ci1" "$MESSAGES"); mn=$(ms_per_msg "$cn" "$cn1" "$MESSAGES")
  mm=$(ms_per_msg "$b0" "$b1" "$MESSAGES")
  own=$(calc "%.3f" "$mi + $mn")
  if [ "$mode" = on ]; then
    refused=$(metric_sum "$INGRESS_METRICS" baton_limit_refusals_total)
    fallback=$(metric_sum "$INGRESS_METRICS" baton_limit_fallback_total)
  fi
  log "$label: accepted $MESSAGES in ${accept_t}s -> $r msg/s; CPU ms/msg ingress $mi nats $mn (own $own), machine $mm; limit refusals $refused fallback $fallback"
  results+=("$label $mode $r $mi $mn $own $mm $refused $fallback")
  if [ "$mode" = on ]; then on_rates+=" $r"; on_own+=" $own"; else off_rates+=" $r"; off_own+=" $own"; fi

  kill "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
  wait "$INGRESS_PID" "$NATS_PID" 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$bench_work/$label.nats"
}

for round in $(seq 1 "$ROUNDS"); do
  measure "r$round-off" off
  measure "r$round-on" on
done

# ---------------------------------------------------------------- summary -------------------
echo
echo "shared limits cost ($(date -u +%FT%TZ)): messages=$MESSAGES sessions=$SESSIONS size=$SIZE warmup=$WARMUP rounds=$ROUNDS per-minute=$PER_MINUTE baton-log-level=$BATON_LOG"
printf '%-8s %-6s %9s %12s %10s %10s %12s  %9s %s\n' \
  run limits "msg/s" "ingress ms/m" "nats ms/m" "own ms/m" "machine ms/m" "refusals" "fallback"
for line in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-8s %-6s %9s %12s %10s %10s %12s  %9s %s\n' $line
done
off_m=$(echo "$off_rates" | median)
on_m=$(echo "$on_rates" | median)
off_c=$(echo "$off_own" | median %.3f)
on_c=$(echo "$on_own" | median %.3f)
echo "accept rate: limits off $off_m msg/s, on $on_m msg/s (medians) -> on/off = $(ratio "$on_m" "$off_m") (target: a cost under 10 %, i.e. on/off >= 0.90)"
echo "own CPU per message (ingress + nats-server, medians): off $off_c ms, on $on_c ms"
echo "(load at the end: $(load_note))"
