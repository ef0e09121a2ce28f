#!/usr/bin/env bash
# Cost of content filtering (issue 19): the ingress accept rate with an rspamd content filter
# on the SendingPool versus no filter, same machine, same run.
#   smtp-source -s 20 -l 2048 -m 10000 -f app@example.com -t x@dest.test HOST:PORT
#   -> `baton ingress` (release build) + `nats-server -js`, NO worker (like
#      bench/ingress_vs_postfix.sh: only acceptance is measured; each 250 means the message is
#      in JetStream)
# OFF = the pool has no `contentFilters`.
# ON  = the pool has `contentFilters: [{name: spam, rspamd: {url: ...}}]`: every message is
#       sent to rspamd's /checkv2 after the final dot and before the hand-off, so the DATA
#       reply waits for rspamd's verdict.
# rspamd is a private instance the script starts (like tests/src/scanners.rs): Debian's rules
# (/etc/rspamd), a minimal top-level config with RSPAMD_WORKERS normal workers on a loopback
# port, no controller, no redis, the fuzzy check off, milter headers on, and its DNS pointed at
# a local dnsmasq that answers every query at once with no record (no lookup leaves the
# machine and none waits for a timeout; network rules find nothing). It runs in both modes
# (idle in OFF), so the machine is the same.
# Each measurement starts a fresh nats-server (own store), `config apply` and ingress, sends
# WARMUP messages, then MESSAGES. Accept rate = MESSAGES / wall time of smtp-source. CPU per
# message: utime+stime from /proc/PID/stat of the ingress, nats-server and rspamd (main
# process + its workers) over smtp-source's run, and the whole machine's busy ticks
# (/proc/stat; includes smtp-source and anything else running). Modes alternate OFF, ON, OFF,
# ON ... (ROUNDS rounds); the summary compares the medians. After each ON run the filter's
# verdicts and mean duration are read from the ingress's /metrics (baton_filter_*), to show every
# message was scanned and what rspamd decided.
#
# Usage: bench/filter_cost.sh   (from the repo root; env: ROUNDS (3) MESSAGES (10000) SESSIONS
#        (20) SIZE (2048) WARMUP (200) RSPAMD_WORKERS (nproc) BATON BATON_LOG BENCH_KEEP)
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-10000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}
WARMUP=${WARMUP:-200}
RSPAMD_WORKERS=${RSPAMD_WORKERS:-$(nproc)}
RSPAMD_READY=${RSPAMD_READY:-180}

bench_init
for t in /usr/bin/rspamd dnsmasq curl; do
  command -v "$t" >/dev/null || { echo "$t not found (scripts/setup installs rspamd and dnsmasq)" >&2; exit 1; }
done
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(rspamd --version 2>/dev/null | head -1); $(load_note)"

HZ=$(getconf CLK_TCK)
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# rspamd's main process and its children (workers, helpers).
rspamd_ticks() {
  local s=0 p
  for p in "$RSPAMD_PID" $(ps -o pid= --ppid "$RSPAMD_PID"); do
    s=$((s + $(pid_ticks "$p")))
  done
  echo "$s"
}
ms_per_msg() { calc "%.3f" "($2 - $1) / $HZ / $3 * 1000"; } # TICKS0 TICKS1 N
median() { # [PRINTF FORMAT, default %.1f] < values
  tr ' ' '\n' | grep -v '^$' | sort -g | awk -v f="${1:-%.1f}" '{ v[NR] = $1 } END { if (NR % 2) printf f, v[(NR + 1) / 2]; else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
metric_val() { # URL SERIES (exact, with labels) -> value, 0 if absent
  curl -fs "$1/metrics" | awk -v s="$2" '$1 == s { v += $2 } END { printf "%g", v + 0 }'
}

# ---------------------------------------------------------------- rspamd --------------------
# DNS for rspamd: dnsmasq answering everything locally (NXDOMAIN / no data) at once.
dns_port=$(free_port)
dnsmasq --keep-in-foreground --no-daemon --conf-file=/dev/null --no-resolv --no-hosts \
  --no-poll --bind-interfaces --listen-address=127.0.0.1 --user=root --pid-file \
  --port="$dns_port" --address='/#/' >"$bench_work/rspamd-dns.log" 2>&1 &
bench_pids+=($!)
wait_port "$dns_port"

rspamd_dir="$bench_work/rspamd"
mkdir -p "$rspamd_dir/local.d" "$rspamd_dir/db" "$rspamd_dir/run"
rspamd_port=$(free_port)
cat >"$rspamd_dir/rspamd.conf" <<EOF
.include "\$CONFDIR/common.conf"
options {
    pidfile = "\$RUNDIR/rspamd.pid";
    .include "\$CONFDIR/options.inc"
    dns { nameserver = ["127.0.0.1:$dns_port"]; timeout = 1s; retransmits = 1; }
}
logging {
    type = "console";
    level = "warning";
}
worker "normal" {
    bind_socket = "127.0.0.1:$rspamd_port";
    count = $RSPAMD_WORKERS;
    .include "\$CONFDIR/worker-normal.inc"
}
EOF
cat >"$rspamd_dir/local.d/milter_headers.conf" <<'EOF'
use = ["x-spamd-bar", "x-rspamd-queue-id"];
skip_local = false;
skip_authenticated = false;
EOF
echo "enabled = false;" >"$rspamd_dir/local.d/fuzzy_check.conf"
/usr/bin/rspamd -f -i -c "$rspamd_dir/rspamd.conf" --var CONFDIR=/etc/rspamd \
  --var "LOCAL_CONFDIR=$rspamd_dir" --var "DBDIR=$rspamd_dir/db" \
  --var "RUNDIR=$rspamd_dir/run" --var "LOGDIR=$rspamd_dir" >"$bench_work/rspamd.log" 2>&1 &
RSPAMD_PID=$!
bench_pids+=("$RSPAMD_PID")
RSPAMD_URL="http://127.0.0.1:$rspamd_port"
t0=$(now)
for _ in $(seq 1 $((RSPAMD_READY * 10))); do
  curl -fs "$RSPAMD_URL/ping" >/dev/null 2>&1 && break
  kill -0 "$RSPAMD_PID" 2>/dev/null || { echo "rspamd exited:" >&2; tail -20 "$bench_work/rspamd.log" >&2; exit 1; }
  sleep 0.1
done
curl -fs "$RSPAMD_URL/ping" >/dev/null || { echo "rspamd not ready after ${RSPAMD_READY}s" >&2; tail -20 "$bench_work/rspamd.log" >&2; exit 1; }
log "rspamd ready at $RSPAMD_URL after $(calc "%.1f" "$(now) - $t0") s ($RSPAMD_WORKERS normal workers)"

# ---------------------------------------------------------------- runs ----------------------
results=() # "label mode accept_rate ingress_ms nats_ms rspamd_ms own_ms machine_ms verdicts mean_ms"
off_rates=""
on_rates=""
off_own=""
on_own=""

measure() { # LABEL MODE(on|off)
  local label=$1 mode=$2 accept_t r ci cn cr b0 ci1 cn1 cr1 b1 own verd="-" mean="-"
  start_nats "$label"
  start_sink "$label-unused"
  BATON_CONFIG_APPLY=0 baton_config "$label" "$SINK_PORT"
  if [ "$mode" = on ]; then
    # The pool's content filter, after its retry line.
    sed -i "s|^  retry: .*|&\n  contentFilters:\n    - {name: spam, rspamd: {url: '$RSPAMD_URL'}, timeout: 10s, failureMode: Closed}|" "$BATON_YAML"
  fi
  "$BATON" --log-level warn config apply --nats "$NATS_URL" "$BATON_YAML" >&2
  start_ingress "$label"
  run_source "$label-warmup" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$WARMUP" >/dev/null

  log "$label: filter $mode: smtp-source -s $SESSIONS -l $SIZE -m $MESSAGES ($(load_note))"
  ci=$(pid_ticks "$INGRESS_PID"); cn=$(pid_ticks "$NATS_PID"); cr=$(rspamd_ticks); b0=$(busy_ticks)
  accept_t=$(run_source "$label" "$INGRESS_PORT" "$SESSIONS" "$SIZE" "$MESSAGES")
  ci1=$(pid_ticks "$INGRESS_PID"); cn1=$(pid_ticks "$NATS_PID"); cr1=$(rspamd_ticks); b1=$(busy_ticks)
  r=$(rate "$MESSAGES" "$accept_t")
  local accepted
  accepted=$(metric_sum "$INGRESS_METRICS" baton_ingress_messages_accepted_total)
  if [ "$accepted" -ne $((WARMUP + MESSAGES)) ]; then
    log "$label: WARNING the ingress accepted $accepted, expected $((WARMUP + MESSAGES)) (smtp-source output: $bench_work/$label.source.out)"
  fi
  local mi mn mr mm
  mi=$(ms_per_msg "$ci" "$ci1" "$MESSAGES"); mn=$(ms_per_msg "$cn" "$cn1" "$MESSAGES")
  mr=$(ms_per_msg "$cr" "$cr1" "$MESSAGES"); mm=$(ms_per_msg "$b0" "$b1" "$MESSAGES")
  own=$(calc "%.3f" "$mi + $mn + $mr")
  if [ "$mode" = on ]; then
    local v n s
    verd=""
    for v in accept reject tempfail quarantine busy failed; do
      n=$(metric_val "$INGRESS_METRICS" "baton_filter_verdicts_total{filter=\"spam\",verdict=\"$v\"}")
      [ "$n" != 0 ] && verd+="$v=$n,"
    done
    verd=${verd%,}
    n=$(metric_val "$INGRESS_METRICS" 'baton_filter_duration_seconds_count{filter="spam"}')
    s=$(metric_val "$INGRESS_METRICS" 'baton_filter_duration_seconds_sum{filter="spam"}')
    mean=$(calc "%.1f" "1000 * $s / ($n > 0 ? $n : 1)")
  fi
  log "$label: accepted $MESSAGES in ${accept_t}s -> $r msg/s; CPU ms/msg ingress $mi nats $mn rspamd $mr (own $own), machine $mm; filter verdicts ${verd} mean ${mean} ms"
  results+=("$label $mode $r $mi $mn $mr $own $mm ${verd:--} $mean")
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
echo "content filtering cost ($(date -u +%FT%TZ)): messages=$MESSAGES sessions=$SESSIONS size=$SIZE warmup=$WARMUP rounds=$ROUNDS rspamd-workers=$RSPAMD_WORKERS baton-log-level=$BATON_LOG"
printf '%-8s %-6s %9s %12s %10s %12s %10s %12s  %-28s %s\n' \
  run filter "msg/s" "ingress ms/m" "nats ms/m" "rspamd ms/m" "own ms/m" "machine ms/m" "verdicts" "mean filter ms"
for line in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-8s %-6s %9s %12s %10s %12s %10s %12s  %-28s %s\n' $line
done
off_m=$(echo "$off_rates" | median)
on_m=$(echo "$on_rates" | median)
off_c=$(echo "$off_own" | median %.3f)
on_c=$(echo "$on_own" | median %.3f)
echo "accept rate: rspamd off $off_m msg/s, on $on_m msg/s (medians) -> on/off = $(ratio "$on_m" "$off_m"); off/on = $(ratio "$off_m" "$on_m")x"
echo "own CPU per message (ingress + nats-server + rspamd, medians): off $off_c ms, on $on_c ms"
echo "(load at the end: $(load_note))"
