# Shared helpers for the benchmark scripts in bench/. Sourced, not run.
#
# Everything a benchmark starts is recorded here and stopped on exit: processes by their PID,
# private Postfix instances with `postfix -c DIR stop`, and the work directory is removed
# (set BENCH_KEEP=1 to keep it for inspection).

set -euo pipefail

BATON=${BATON:-target/release/baton}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
# Baton's default log level (one `queued` / `sent` line per message, like Postfix's maillog,
# which the private Postfix writes too); BATON_LOG=warn shows what logging costs.
BATON_LOG=${BATON_LOG:-info}

bench_pids=()
bench_postfix_dirs=()
bench_work=""

bench_cleanup() {
  local rc=$?
  set +e
  for d in "${bench_postfix_dirs[@]}"; do
    postfix -c "$d" stop >/dev/null 2>&1
  done
  # Reverse order: clients before servers.
  for ((i = ${#bench_pids[@]} - 1; i >= 0; i--)); do
    kill "${bench_pids[$i]}" 2>/dev/null
  done
  for p in "${bench_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  if [ -n "$bench_work" ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$bench_work"
  elif [ -n "$bench_work" ]; then
    echo "work directory kept: $bench_work" >&2
  fi
  exit $rc
}

bench_init() {
  command -v nats-server >/dev/null || { echo "nats-server not found (scripts/setup)" >&2; exit 1; }
  for t in "$SMTP_SOURCE" "$SMTP_SINK" /usr/sbin/postfix; do
    [ -x "$t" ] || { echo "$t not found (apt-get install postfix)" >&2; exit 1; }
  done
  if [ ! -x "$BATON" ]; then
    echo "building $BATON (cargo build --release -p baton)" >&2
    cargo build --release -p baton >&2
  fi
  bench_work=$(mktemp -d /tmp/baton-bench.XXXXXX)
  # Postfix daemons (user postfix) and smtp-sink (user nobody) must traverse it.
  chmod 755 "$bench_work"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
}

log() { echo "[$(date +%T)] $*" >&2; }

# A free TCP port on 127.0.0.1 (bound and released; good enough for a benchmark).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # PORT [TRIES of 0.1 s]
  local port=$1 tries=${2:-100}
  for _ in $(seq 1 "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$port" >&2
  return 1
}

now() { date +%s.%N; }
fmt() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }

# Print the one-minute load average and what else is using the CPU (2 shared cores).
load_note() {
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (nproc $(nproc))"
}

# --- smtp-sink ------------------------------------------------------------------------------

# start_sink NAME -> sets SINK_PORT, SINK_OUT, SINK_PID. Counts messages ("mesg=N" on each final dot).
start_sink() {
  local name=$1
  SINK_PORT=$(free_port)
  SINK_OUT="$bench_work/$name.sink.out"
  "$SMTP_SINK" -u nobody -c "127.0.0.1:$SINK_PORT" 1024 >"$SINK_OUT" 2>&1 &
  SINK_PID=$!
  bench_pids+=("$SINK_PID")
  wait_port "$SINK_PORT"
}

sink_count() { # OUTFILE
  local c
  c=$(tail -c 200 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2)
  echo "${c:-0}"
}

# wait_sink OUTFILE N TIMEOUT_S -> prints the time (date +%s.%N) the Nth message arrived,
# sampled every 20 ms; exits non-zero on timeout.
wait_sink() {
  local out=$1 n=$2 timeout=$3 start c
  start=$(date +%s)
  while :; do
    c=$(sink_count "$out")
    if [ "$c" -ge "$n" ]; then now; return 0; fi
    if [ $(($(date +%s) - start)) -ge "$timeout" ]; then
      echo "sink saw $c of $n messages after ${timeout}s" >&2
      return 1
    fi
    sleep 0.02
  done
}

# --- stock Postfix, private instance --------------------------------------------------------

# start_postfix NAME RELAY_SINK_PORT [accept-only] -> sets PF_PORT, PF_DIR.
# A private instance: own config dir, queue, data dir and log file; listens on 127.0.0.1:PF_PORT
# and relays everything to [127.0.0.1]:RELAY_SINK_PORT. Stock settings otherwise, except
# chroot off (the private queue has no chroot files) and no local delivery.
# accept-only: every message is put on hold (`check_client_access static:HOLD`), so cleanup
# files it in the hold queue and qmgr never schedules it: acceptance (smtpd + cleanup + fsync)
# without delivery. (Removing qmgr instead makes every cleanup wait on the dead qmgr trigger.)
start_postfix() {
  local name=$1 sinkport=$2 mode=${3:-}
  PF_DIR="$bench_work/$name"
  PF_PORT=$(free_port)
  mkdir -p "$PF_DIR/etc" "$PF_DIR/queue" "$PF_DIR/data"
  chown postfix "$PF_DIR/data"
  cp /etc/postfix/master.cf "$PF_DIR/etc/master.cf"
  : >"$PF_DIR/etc/main.cf"
  postconf -c "$PF_DIR/etc" -e \
    "compatibility_level = 3.6" \
    "queue_directory = $PF_DIR/queue" \
    "data_directory = $PF_DIR/data" \
    "mail_owner = postfix" "setgid_group = postdrop" \
    "myhostname = postfix-bench.localdomain" "mydomain = localdomain" \
    "inet_interfaces = 127.0.0.1" "inet_protocols = ipv4" \
    "mydestination =" "local_transport = error:local delivery disabled" \
    "mynetworks = 127.0.0.0/8" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "relayhost = [127.0.0.1]:$sinkport" \
    "maillog_file_prefixes = $bench_work" "maillog_file = $PF_DIR/maillog" \
    "syslog_name = postfix-$name" \
    "smtp_tls_security_level = none" "smtpd_tls_security_level = none" \
    "alias_maps =" "alias_database ="
  # Listener on our port; chroot off everywhere.
  postconf -c "$PF_DIR/etc" -M# smtp/inet
  postconf -c "$PF_DIR/etc" -M "127.0.0.1:$PF_PORT/inet = 127.0.0.1:$PF_PORT inet n - n - - smtpd"
  postconf -c "$PF_DIR/etc" -F '*/*/chroot = n'
  postconf -c "$PF_DIR/etc" -M postlog/unix-dgram="postlog unix-dgram n - n - 1 postlogd"
  if [ "$mode" = accept-only ]; then
    postconf -c "$PF_DIR/etc" -e \
      "smtpd_relay_restrictions = check_client_access static:HOLD, permit_mynetworks, reject_unauth_destination"
  fi
  postfix -c "$PF_DIR/etc" set-permissions >/dev/null 2>&1 || true
  # postfix reports errors on stderr only when it is a terminal; run it under script(1).
  if ! script -qec "postfix -c $PF_DIR/etc start" /dev/null >"$PF_DIR/start.out" 2>&1; then
    echo "private Postfix $name did not start:" >&2
    cat "$PF_DIR/start.out" >&2
    return 1
  fi
  bench_postfix_dirs+=("$PF_DIR/etc")
  wait_port "$PF_PORT" 100
}

stop_postfix() { # DIR
  postfix -c "$1/etc" stop >/dev/null 2>&1 || true
}

# --- Baton ----------------------------------------------------------------------------------

# start_nats NAME -> sets NATS_URL, NATS_PID.
# NATS_SYNC_ALWAYS=1: `jetstream { sync_interval: always }` (fsync per message; nats-server
# >= 2.10), what `baton dev --durable` runs.
start_nats() {
  local name=$1 port conf=()
  port=$(free_port)
  mkdir -p "$bench_work/$name.nats"
  if [ "${NATS_SYNC_ALWAYS:-0}" = 1 ]; then
    echo "jetstream { sync_interval: always }" >"$bench_work/$name.nats.conf"
    conf=(-c "$bench_work/$name.nats.conf")
  fi
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$bench_work/$name.nats" "${conf[@]}" \
    >"$bench_work/$name.nats.log" 2>&1 &
  NATS_PID=$!
  bench_pids+=("$NATS_PID")
  NATS_URL="nats://127.0.0.1:$port"
  wait_port "$port"
}

# baton_config NAME SINK_PORT [DELIVERY] [SCHEDULE] -> writes the YAML (pool `bench`) and
# applies it. DELIVERY defaults to Smarthost mode to the sink; SCHEDULE to "[10s, 1m, 5m]".
# DKIM_PEM=FILE: the RelayDomain signs with that RSA key (selector `bench`; its Secret is in the
# YAML, sealed in the snapshot with the keyring BATON_KEYRING, which must then be set).
baton_config() {
  local name=$1 sinkport=$2 dkim="" secret=""
  local delivery=${3:-"{mode: Smarthost, smarthosts: [{host: 127.0.0.1, port: $sinkport, weight: 1, tls: Disabled}]}"}
  local schedule=${4:-"[10s, 1m, 5m]"}
  BATON_YAML="$bench_work/$name.yaml"
  if [ -n "${DKIM_PEM:-}" ]; then
    dkim="  dkim: {selector: bench, algorithm: rsa-sha256, keySecretRef: {name: bench-dkim}}"
    secret="---
apiVersion: v1
kind: Secret
metadata: {name: bench-dkim, namespace: default}
stringData:
  private.pem: |
$(sed 's/^/    /' "$DKIM_PEM")"
  fi
  cat >"$BATON_YAML" <<EOF
apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata:
  name: bench
spec:
  delivery: $delivery
  egress:
    - {ehloName: baton-bench.localhost, weight: 1}
  tls: {policy: Disabled}
  retry: {schedule: $schedule, maxAge: 1d}
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
$dkim
$secret
EOF
  # BATON_CONFIG_APPLY=0: only write the YAML (for `baton dev --config`).
  if [ "${BATON_CONFIG_APPLY:-1}" = 1 ]; then
    "$BATON" --log-level warn config apply --nats "$NATS_URL" "$BATON_YAML" >&2
  fi
}

# start_ingress NAME -> sets INGRESS_PORT, INGRESS_PID, INGRESS_METRICS. Production `baton
# ingress` with a throw-away self-signed certificate.
start_ingress() {
  local name=$1 mport
  if [ ! -f "$bench_work/tls.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
      -keyout "$bench_work/tls.key" -out "$bench_work/tls.crt" >/dev/null 2>&1
  fi
  INGRESS_PORT=$(free_port)
  mport=$(free_port)
  INGRESS_METRICS="http://127.0.0.1:$mport"
  "$BATON" --log-level "$BATON_LOG" ingress --nats "$NATS_URL" \
    --tls-cert "$bench_work/tls.crt" --tls-key "$bench_work/tls.key" \
    --hostname baton-bench.localhost \
    --listen-smtp "127.0.0.1:$INGRESS_PORT" \
    --listen-submission "127.0.0.1:$(free_port)" --listen-smtps "127.0.0.1:$(free_port)" \
    --listen-metrics "127.0.0.1:$mport" >"$bench_work/$name.ingress.log" 2>&1 &
  INGRESS_PID=$!
  bench_pids+=("$INGRESS_PID")
  wait_ready "$INGRESS_METRICS"
}

# start_worker NAME [EXTRA ARGS...] -> sets WORKER_PID, WORKER_METRICS.
start_worker() {
  local name=$1 mport
  shift
  mport=$(free_port)
  WORKER_METRICS="http://127.0.0.1:$mport"
  "$BATON" --log-level "$BATON_LOG" worker --nats "$NATS_URL" --pool bench \
    --hostname baton-bench.localhost --listen-metrics "127.0.0.1:$mport" "$@" \
    >"$bench_work/$name.worker.log" 2>&1 &
  WORKER_PID=$!
  bench_pids+=("$WORKER_PID")
  wait_ready "$WORKER_METRICS"
}

wait_ready() { # METRICS_URL
  for _ in $(seq 1 150); do
    curl -fs "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1/readyz never became ready" >&2
  curl -s "$1/readyz" >&2 || true
  return 1
}

# metric_sum METRICS_URL SERIES_PREFIX -> sum of the samples whose line starts with the prefix.
metric_sum() {
  curl -fs "$1/metrics" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%d", s }'
}

# start_dns NAME "MX-HOST-ARGS..." -> sets DNS_ADDR. dnsmasq on loopback, authoritative for .test.
start_dns() {
  local name=$1 port
  shift
  port=$(free_port)
  dnsmasq --keep-in-foreground --no-daemon --conf-file=/dev/null --no-resolv --no-hosts \
    --no-poll --bind-interfaces --listen-address=127.0.0.1 --user=root --pid-file \
    --port="$port" --local=/test/ "$@" >"$bench_work/$name.dns.log" 2>&1 &
  bench_pids+=($!)
  DNS_ADDR="127.0.0.1:$port"
  # Wait until it answers a query (any answer).
  python3 - "$port" <<'PY'
import socket, sys, time
q = bytes.fromhex("123401000001000000000000") + b"\x04test\x00" + bytes.fromhex("00060001")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.1)
for _ in range(100):
    try:
        s.sendto(q, ("127.0.0.1", int(sys.argv[1])))
        s.recvfrom(512)
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("dnsmasq did not answer")
PY
}

# CPU clock ticks (getconf CLK_TCK per second) a process has used: user + kernel, and user.
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pid_user_ticks() { awk '{ print $14 }' "/proc/$1/stat"; }

vm_kib() { # PID FIELD (VmRSS, VmHWM)
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# run_source LABEL PORT SESSIONS SIZE COUNT [RCPT] -> prints elapsed seconds; aborts if
# smtp-source fails. RCPT defaults to x@dest.test.
# SOURCE_FLAGS: more smtp-source options (e.g. -d: keep each connection for the next message).
run_source() {
  local label=$1 port=$2 s=$3 l=$4 m=$5 rcpt=${6:-x@dest.test} t0 t1
  t0=$(now)
  # /usr/bin/time records smtp-source's own CPU (user+sys s) in $label.source.cpu.
  if ! /usr/bin/time -f "%U %S" -o "$bench_work/$label.source.cpu" \
    "$SMTP_SOURCE" ${SOURCE_FLAGS:-} -s "$s" -l "$l" -m "$m" -f app@example.com -t "$rcpt" \
    "127.0.0.1:$port" >"$bench_work/$label.source.out" 2>&1; then
    echo "smtp-source against $label failed:" >&2
    tail -5 "$bench_work/$label.source.out" >&2
    return 1
  fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# source_cpu LABEL SECONDS -> smtp-source's CPU use during its run, in % of one core.
source_cpu() {
  awk -v t="$2" '{ printf "%.0f", 100 * ($1 + $2) / t }' "$bench_work/$1.source.cpu"
}
