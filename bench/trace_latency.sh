#!/usr/bin/env bash
# `baton queue trace` over a large event stream (issue 15): how long the CLI takes to print a
# message's whole timeline, by queue id and by Message-ID, with N events stored.
# Target: "`baton queue trace <queue-id|Message-ID>` prints the whole timeline of a message in
# under 1 s with a million events stored".
#
#   private nats-server -js  <-  baton config apply (creates BATON_EVENTS, among others)
#   generator (python3, NATS protocol over a socket, no client library) -> BATON_EVENTS:
#     N/3 messages x {accepted, deferred, delivered} + one Message-ID index record each
#   baton admin (viewer token, loopback)  <-  baton queue trace <id> -o json
#
# The events are what the ingress and the worker store (CloudEvents JSON, 570 - 760 bytes, under
# baton.events.<namespace>.<relaydomain>.<queue id>.<type>; the index record under
# baton.index.msgid.<32 hex of sha256(Message-ID)>), spread over 4 namespaces / 6 relay
# domains. A message's events are interleaved with other messages' as in a running system:
# its `deferred` is stored DEFER_LAG messages after its `accepted` (the first attempt, ~1 s at
# 1,000 msg/s), its `delivered` DELIVER_LAG messages after it (the 1-minute retry), so one
# timeline spans a good part of the stream, not one block of it. Every publish waits for its
# PubAck (a window of WINDOW in flight); the stream's message count is checked at the end.
#
# Targets: the first message (events at the start of the stream), the middle one and the last
# one (its `delivered` is the stream's last message); per target `trace <queue id>` and
# `trace <Message-ID>` run RUNS times each, timed from CLI start to exit (wall), and the
# events returned are checked (3: accepted, deferred, delivered). An unknown queue id (no
# match anywhere) is timed for reference. Then (RESTART=1, the
# default) nats-server is restarted on the same store and every case runs again: the first run
# of each is then served without the server's block caches (the OS page cache stays warm).
# A case is MET when every one of its runs took < 1 s.
#
# Usage: bench/trace_latency.sh   (from anywhere; env: N RUNS DEFER_LAG DELIVER_LAG WINDOW
#        RESTART FILL_TIMEOUT SETTLE_TIMEOUT EVENTS_MAX_BYTES BATON; BENCH_KEEP=1 keeps the
#        work directory with every JSON answer and the generator's targets)
cd "$(dirname "$0")/.."
BATON=${BATON:-target/release/baton}
source bench/lib.sh

N=${N:-1000000}
RUNS=${RUNS:-5}
DEFER_LAG=${DEFER_LAG:-1000}
DELIVER_LAG=${DELIVER_LAG:-60000}
WINDOW=${WINDOW:-8192}
FILL_TIMEOUT=${FILL_TIMEOUT:-1800} # the whole fill
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-60}
# The owner's default (1Gi) holds a million of these events (~0.75 GiB with the index); the count is checked.
EVENTS_MAX_BYTES=${EVENTS_MAX_BYTES:-1Gi}
TARGET_MS=1000

die() { echo "trace_latency: $*" >&2; exit 1; }
[ "$N" -ge 3 ] 2>/dev/null || die "N must be a number >= 3 (got '$N')"
[ "$RUNS" -ge 1 ] 2>/dev/null || die "RUNS must be a number >= 1 (got '$RUNS')"
for v in DEFER_LAG DELIVER_LAG; do
  [ "${!v}" -ge 0 ] 2>/dev/null || die "$v must be a number >= 0 (got '${!v}')"
done
[ "$DEFER_LAG" -le "$DELIVER_LAG" ] || die "DEFER_LAG ($DEFER_LAG) must not exceed DELIVER_LAG ($DELIVER_LAG): the deferral comes before the delivery"
[ "$WINDOW" -ge 1 ] 2>/dev/null || die "WINDOW must be a number >= 1 (got '$WINDOW')"
command -v jq >/dev/null || die "jq not found"
command -v nats-server >/dev/null || die "nats-server not found (scripts/setup)"
if [ ! -x "$BATON" ]; then
  case $BATON in
    target/release/baton) log "building $BATON (cargo build --release -p baton)"; cargo build -q --release -p baton >&2 ;;
    target/debug/baton) log "building $BATON (cargo build -p baton)"; cargo build -q -p baton >&2 ;;
    *) die "$BATON not found" ;;
  esac
fi
MESSAGES=$((N / 3))
EXPECT=$((MESSAGES * 4)) # 3 events + 1 index record per message

# Not bench_init: it insists on Postfix, which this benchmark does not use.
bench_work=$(mktemp -d /tmp/baton-bench.XXXXXX)
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
nats_version=$(nats-server --version 2>&1 | head -1)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $nats_version; $(load_note)"

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# CPU time (user + sys) of a process so far, in ms.
cpu_ms() { awk -v h="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / h }' "/proc/$1/stat"; }
# stats V1 V2 ... -> "min median max" (median of an even count: mean of the middle two)
stats() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%d %d %d", v[1], m, v[NR] }'
}

# ---------------------------------------------------------------- generator ------------------
GEN="$bench_work/gen.py"
cat >"$GEN" <<'PY'
"""Fill BATON_EVENTS like a running Baton would, or print a stream's info.

    gen.py fill URL MESSAGES DEFER_LAG DELIVER_LAG WINDOW TARGETS_FILE
    gen.py info URL STREAM

Plain NATS protocol over one socket (no client library): PUB with a reply subject, so every
message gets its JetStream PubAck; at most WINDOW unacknowledged at once.
"""
import hashlib, json, random, socket, sys, time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as baton_core::ids
# (namespace, RelayDomain name, mail domain); messages are spread over them unevenly.
TENANTS = [
    ("team-a", "example-com", "example.com"),
    ("team-a", "example-net", "example.net"),
    ("team-b", "shop-example", "shop.example"),
    ("team-b", "news-shop-example", "news.shop.example"),
    ("billing", "invoices-example", "invoices.example"),
    ("platform", "alerts-example", "alerts.example"),
]
WEIGHTS = [30, 10, 25, 15, 12, 8]
RCPT_DOMAINS = ["gmail.test", "outlook.test", "yahoo.test", "web.test", "corp.test", "mail.test"]


class Nats:
    def __init__(self, url):
        hostport = url.split("://", 1)[-1]
        host, port = hostport.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.settimeout(30)
        self.buf = bytearray()
        self.pongs = 0
        line = self._line()
        if not line.startswith(b"INFO"):
            sys.exit(f"gen: not a NATS server: {line[:80]!r}")
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                       b'"no_responders":true,"lang":"bench-raw","version":"0"}\r\nPING\r\n')
        while self.pongs == 0:
            self.poll()

    def _fill(self):
        try:
            chunk = self.s.recv(1 << 20)
        except socket.timeout:
            sys.exit("gen: nats-server did not answer within 30 s")
        if not chunk:
            sys.exit("gen: nats-server closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            self._fill()

    def poll(self, block=True):
        """Parse what has arrived (receiving once more if block); returns the messages as
        (subject, payload, status) where status is the HMSG status line or None."""
        if block:
            self._fill()
        out = []
        buf = self.buf
        pos = 0
        while True:
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            line = bytes(buf[pos:i])
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                parts = line.split()
                size = int(parts[-1])
                if len(buf) < i + 2 + size + 2:
                    break  # the rest of this message has not arrived yet
                body = bytes(buf[i + 2 : i + 2 + size])
                pos = i + 2 + size + 2
                status = None
                if parts[0] == b"HMSG":
                    hlen = int(parts[-2])
                    status = body[:hlen].split(b"\r\n", 1)[0].decode(errors="replace")
                    body = body[hlen:]
                out.append((parts[1].decode(), body, status))
                continue
            pos = i + 2
            if line == b"PING":
                self.s.sendall(b"PONG\r\n")
            elif line == b"PONG":
                self.pongs += 1
            elif line.startswith(b"-ERR"):
                sys.exit(f"gen: nats-server: {line.decode(errors='replace')}")
            # +OK, INFO: ignored
        del buf[:pos]
        return out

    def request(self, subject, payload=b""):
        self.s.sendall(b"SUB _INBOX.genreq 9\r\nPUB %s _INBOX.genreq %d\r\n%s\r\n"
                       % (subject.encode(), len(payload), payload))
        while True:
            for subj, body, status in self.poll():
                if status is not None and " 503" in status:
                    sys.exit(f"gen: no responders for {subject}")
                return json.loads(body)


def queue_id(time_ms, rng):
    value = ((time_ms & ((1 << 45) - 1)) << 45) | rng.getrandbits(45)
    out = []
    for _ in range(18):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def msgid_subject(message_id):
    mid = message_id.strip().lstrip("<").rstrip(">").strip()
    return "baton.index.msgid." + hashlib.sha256(mid.encode()).hexdigest()[:32]


def fill(url, messages, defer_lag, deliver_lag, window, targets_file):
    nc = Nats(url)
    info = nc.request("$JS.API.STREAM.INFO.BATON_EVENTS")
    if "error" in info:
        sys.exit(f"gen: BATON_EVENTS: {info['error']}")
    rng = random.Random(15)
    base_ms = int(time.time() * 1000) - messages  # one message per ms, ending now
    msgs = []  # per message: (qid, ns, name, domain, rcpt, time_ms)
    targets = {0: "first", messages // 2: "middle", messages - 1: "last"}
    nc.s.sendall(b"SUB _INBOX.genack 1\r\n")
    out = bytearray()
    sent = acked = errors = 0
    first_error = None
    last_seq = 0
    t0 = time.time()
    next_report = 100000

    def pub(subject, payload):
        nonlocal sent
        out.extend(b"PUB %s _INBOX.genack %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))
        sent += 1

    def drain(limit):
        nonlocal acked, errors, first_error, last_seq
        deadline = time.time() + 60
        while sent - acked - errors > limit:
            if time.time() > deadline:
                sys.exit(f"gen: {sent - acked - errors} PubAcks missing after 60 s")
            for subj, body, status in nc.poll():
                if status is not None or b'"error"' in body:
                    errors += 1
                    if first_error is None:
                        first_error = status or body.decode(errors="replace")
                else:
                    acked += 1
                    j = body.find(b'"seq":')
                    if j >= 0:
                        last_seq = max(last_seq, int(body[j + 6 :].split(b",")[0].split(b"}")[0]))

    def flush():
        nc.s.sendall(out)
        out.clear()
        drain(window)

    for step in range(messages + max(defer_lag, deliver_lag)):
        i = step
        if i < messages:
            ns, name, domain = rng.choices(TENANTS, WEIGHTS)[0]
            t = base_ms + i
            qid = queue_id(t, rng)
            rcpt = "user%d@%s" % (rng.randrange(1000000), rng.choice(RCPT_DOMAINS))
            msgs.append((qid, ns, name, domain, rcpt, t))
            mid = "<%s.%d@mailer.%s>" % (qid.lower(), rng.randrange(1 << 30), domain)
            rd = f"{ns}/{name}"
            accepted = (
                '{"specversion":"1.0","id":"%s.accepted.0","source":"baton/ingress/baton-ingress-6d9f7c5b4-%s",'
                '"type":"dev.baton.message.accepted.v1","subject":"%s","time":"%s","datacontenttype":"application/json",'
                '"data":{"authenticatedAs":"%s-mailer","clientAddress":"10.42.%d.%d","dkim":[{"domain":"%s","selector":"baton2026"}],'
                '"helo":"app-%d.%s.svc.cluster.local","listener":"submission","messageId":"%s","pool":"default",'
                '"queueId":"%s","recipients":["%s"],"relayDomain":"%s","sender":"noreply@%s","size":%d,'
                '"streamSequence":%d,"tlsCipher":"TLS13_AES_256_GCM_SHA384"}}'
                % (qid, "x2k8p" if i % 2 else "q7m4z", qid, rfc3339(t), ns, i % 250, i % 200, domain,
                   i % 8, ns, mid, qid, rcpt, rd, domain, 2000 + rng.randrange(60000), i + 1)
            )
            pub(f"baton.events.{ns}.{name}.{qid}.accepted", accepted.encode())
            record = json.dumps({"queueId": qid, "relayDomain": rd, "messageId": mid},
                                separators=(",", ":"))
            pub(msgid_subject(mid), record.encode())
            if i in targets:
                targets[i] = (targets[i], qid, mid)
        for kind, j, attempt in (("deferred", step - defer_lag, 1), ("delivered", step - deliver_lag, 2)):
            if not 0 <= j < messages:
                continue
            qid, ns, name, domain, rcpt, t = msgs[j]
            mx = rcpt.split("@")[1]
            if kind == "deferred":
                reply, status, tt = "451 4.7.1 Greylisted, please try again later", "4.7.1", t + 900
            else:
                reply, status, tt = "250 2.0.0 Ok: queued as %X" % rng.getrandbits(40), "2.0.0", t + 61000
            ev = (
                '{"specversion":"1.0","id":"%s.%s.%s.%d.%s","source":"baton/worker/baton-worker-default-6d9f7c5b4-%s",'
                '"type":"dev.baton.message.%s.v1","subject":"%s","time":"%s","datacontenttype":"application/json",'
                '"data":{"attempt":%d,"class":"","dsn":false,"pool":"default","queueId":"%s","recipient":"%s",'
                '"relayDomain":"%s/%s","remote":"mx%d.%s[203.0.113.%d]","reply":"%s","status":"%s"}}'
                % (qid, kind, qid, attempt, rcpt, "h5r2d" if j % 2 else "w8c3n", kind, qid, rfc3339(tt),
                   attempt, qid, rcpt, ns, name, 1 + j % 2, mx, 1 + j % 250, reply, status)
            )
            pub(f"baton.events.{ns}.{name}.{qid}.{kind}", ev.encode())
        if len(out) >= 256 * 1024:
            flush()
        if sent >= next_report:
            dt = time.time() - t0
            print(f"gen: {sent} published, {acked} acked in {dt:.0f}s ({acked / max(dt, 1e-9):.0f}/s)",
                  file=sys.stderr, flush=True)
            next_report += 100000
    nc.s.sendall(out)
    out.clear()
    drain(0)
    dt = time.time() - t0
    print(f"gen: {sent} published, {acked} acked, {errors} failed in {dt:.1f}s "
          f"({acked / max(dt, 1e-9):.0f}/s); last sequence {last_seq}", file=sys.stderr, flush=True)
    if errors:
        sys.exit(f"gen: {errors} publishes failed; the first: {first_error}")
    with open(targets_file, "w") as f:
        for i in sorted(targets):
            label, qid, mid = targets[i]
            f.write(f"{label} {i} {qid} {mid}\n")
    print(f"{sent} {dt:.1f}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "fill" and len(sys.argv) == 8:
        fill(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
             sys.argv[7])
    elif len(sys.argv) == 4 and sys.argv[1] == "info":
        nc = Nats(sys.argv[2])
        print(json.dumps(nc.request(f"$JS.API.STREAM.INFO.{sys.argv[3]}")))
    else:
        sys.exit(__doc__)


main()
PY

# ---------------------------------------------------------------- NATS and config ------------
start_nats trace
KEYRING="$bench_work/keyring"
"$BATON" --log-level warn keyring add --keyring "$KEYRING" >/dev/null \
  || die "baton keyring add failed"
CONFIG="$bench_work/baton.yaml"
cat >"$CONFIG" <<'EOF'
apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata:
  name: default
spec:
  # Nothing runs against it: the config only makes `config apply` provision the streams.
  delivery: {mode: Smarthost, smarthosts: [{host: 127.0.0.1, port: 9, weight: 1, tls: Disabled}]}
  egress:
    - {ehloName: baton-bench.localhost, weight: 1}
  tls: {policy: Disabled}
  retry: {schedule: [1m, 5m, 15m], maxAge: 1d}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {name: example-com, namespace: team-a}
spec:
  domain: example.com
  pool: default
  allowedSenders: ["*@example.com"]
  submission:
    networks: [127.0.0.0/8]
EOF
"$BATON" --log-level warn config apply --nats "$NATS_URL" --keyring "$KEYRING" \
  --events-max-bytes "$EVENTS_MAX_BYTES" "$CONFIG" >"$bench_work/config-apply.out" 2>&1 \
  || { cat "$bench_work/config-apply.out" >&2; die "baton config apply failed"; }
stream_info() { python3 "$GEN" info "$NATS_URL" BATON_EVENTS; }
info=$(stream_info) || die "no stream info for BATON_EVENTS"
[ "$(jq -r '.config.name // empty' <<<"$info")" = BATON_EVENTS ] \
  || die "config apply did not create BATON_EVENTS: $info"
log "BATON_EVENTS: max_bytes $(jq -r .config.max_bytes <<<"$info"), max_age $(jq -r .config.max_age <<<"$info") ns, direct get $(jq -r .config.allow_direct <<<"$info")"

# ---------------------------------------------------------------- fill -----------------------
log "fill: $MESSAGES messages x 3 events + 1 Message-ID record = $EXPECT stream messages (defer lag $DEFER_LAG, deliver lag $DELIVER_LAG, window $WINDOW)"
TARGETS="$bench_work/targets"
fill_t0=$(now)
timeout "$FILL_TIMEOUT" /usr/bin/time -f "%U %S %e" -o "$bench_work/gen.time" \
  python3 "$GEN" fill "$NATS_URL" "$MESSAGES" "$DEFER_LAG" "$DELIVER_LAG" "$WINDOW" "$TARGETS" \
  >"$bench_work/gen.out" 2> >(tee "$bench_work/gen.err" >&2) \
  || die "the generator failed or took more than ${FILL_TIMEOUT}s (see above)"
fill_t=$(awk -v a="$fill_t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
gen_cpu=$(awk '{ printf "%.0f", $1 + $2 }' "$bench_work/gen.time")
info=$(stream_info) || die "no stream info for BATON_EVENTS after the fill"
stored=$(jq -r '.state.messages' <<<"$info")
stored_bytes=$(jq -r '.state.bytes' <<<"$info")
[ "$stored" -eq "$EXPECT" ] \
  || die "BATON_EVENTS holds $stored messages, expected $EXPECT (first seq $(jq -r .state.first_seq <<<"$info"); discarded by max_bytes?)"
events_stored=$((MESSAGES * 3))
mib=$(awk -v b="$stored_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
per_msg=$(awk -v b="$stored_bytes" -v n="$stored" 'BEGIN { printf "%.0f", b / n }')
log "fill: $stored stream messages ($events_stored events), $mib MiB, in ${fill_t}s (generator CPU ${gen_cpu}s)"

# Settle: measure once nats-server is idle again (< 50 ms CPU in 1 s, at most SETTLE_TIMEOUT s).
settle_start=$(date +%s)
while :; do
  n0=$(cpu_ms "$NATS_PID"); sleep 1; n1=$(cpu_ms "$NATS_PID")
  [ $((n1 - n0)) -lt 50 ] && break
  if [ $(($(date +%s) - settle_start)) -ge "$SETTLE_TIMEOUT" ]; then
    log "warning: nats-server still used $((n1 - n0)) ms CPU/s after ${SETTLE_TIMEOUT}s; measuring anyway"
    break
  fi
done
nats_rss=$(vm_kib "$NATS_PID" VmRSS)

# ---------------------------------------------------------------- admin API ------------------
TOKENS="$bench_work/admin-tokens"
TOKEN="$bench_work/admin-token"
"$BATON" --log-level warn admin-token add --tokens "$TOKENS" --name bench --permission viewer \
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
ok=""
for _ in $(seq 1 100); do
  q status >/dev/null 2>&1 && { ok=1; break; }
  sleep 0.1
done
[ -n "$ok" ] || { q status >&2 || true; tail -20 "$bench_work/admin.log" >&2; die "the API does not answer status"; }

# ---------------------------------------------------------------- measure --------------------
# time_trace NAME EXPECT ID -> RUNS runs of `baton queue -o json trace ID`; outputs kept as
# $bench_work/NAME.RUN.json. EXPECT=3: the answer must be accepted, deferred, delivered of one
# queue id; EXPECT=none: the call must fail with "no events". Sets WALL[NAME] ("min med max"),
# WALL_ALL[NAME], RESULT[NAME], CPU[NAME] (mean CPU ms per run of baton admin / nats-server).
declare -A WALL WALL_ALL RESULT CPU
time_trace() {
  local name=$1 expect=$2 id=$3 t0 t1 out err walls=() i a0 n0 rc got
  a0=$(cpu_ms "$ADMIN_PID"); n0=$(cpu_ms "$NATS_PID")
  for i in $(seq 1 "$RUNS"); do
    out="$bench_work/$name.$i.json"; err="$bench_work/$name.$i.err"
    t0=$(ms_now)
    rc=0
    timeout 60 "$BATON" --log-level warn queue --admin "$ADMIN" --token-file "$TOKEN" -o json \
      trace "$id" >"$out" 2>"$err" || rc=$?
    t1=$(ms_now)
    walls+=($((t1 - t0)))
    if [ "$expect" = none ]; then
      [ "$rc" -ne 0 ] && grep -q "no events" "$err" \
        || { cat "$err" >&2; die "trace $id (unknown) did not fail with 'no events' (exit $rc)"; }
      RESULT[$name]="not found (exit $rc)"
    else
      [ "$rc" -eq 0 ] || { cat "$err" >&2; die "baton queue trace $id failed (run $i, exit $rc)"; }
      got=$(jq -r '[.events[] | .type | sub("^dev\\.baton\\.message\\."; "") | sub("\\.v1$"; "")] | join(",")' "$out")
      [ "$got" = "accepted,deferred,delivered" ] \
        || die "trace $id returned '$got', not accepted,deferred,delivered (run $i; $out)"
      [ "$(jq -r '[.events[].subject] | unique | length' "$out")" = 1 ] \
        || die "trace $id returned events of more than one message (run $i)"
      RESULT[$name]="$(jq -r '.events | length' "$out") events ($got)"
    fi
  done
  CPU[$name]="$(( ($(cpu_ms "$ADMIN_PID") - a0) / RUNS )) $(( ($(cpu_ms "$NATS_PID") - n0) / RUNS ))"
  WALL[$name]=$(stats "${walls[@]}")
  WALL_ALL[$name]="${walls[*]}"
  log "$name: wall ms ${walls[*]}"
}

declare -A QID MID POS
order=()
while read -r label idx qid mid; do
  QID[$label]=$qid; MID[$label]=$mid; POS[$label]=$idx; order+=("$label")
done <"$TARGETS"
[ ${#order[@]} -eq 3 ] || die "the generator wrote ${#order[@]} targets, not 3 ($TARGETS)"

log "measuring ($RUNS runs each; $(load_note))"
# Reference: a CLI start, a connection and one small call.
walls=()
for i in $(seq 1 "$RUNS"); do
  t0=$(ms_now); q status >/dev/null || die "status failed"; t1=$(ms_now); walls+=($((t1 - t0)))
done
WALL[status]=$(stats "${walls[@]}"); WALL_ALL[status]="${walls[*]}"; CPU[status]="- -"
for label in "${order[@]}"; do
  time_trace "qid_$label" 3 "${QID[$label]}"
  time_trace "mid_$label" 3 "${MID[$label]}"
done
# Informational: a queue id with no events (a mistyped one): the filter matches nothing.
time_trace unknown none 0000000000000000ZZ

# After a nats-server restart (RESTART=1): the server rebuilds its state from the store and has
# no message blocks cached (the OS page cache is still warm: it is not dropped on a shared
# machine). The first run of each case is the cold one.
restart_s="" rss_restart=""
if [ "${RESTART:-1}" = 1 ]; then
  nats_port=${NATS_URL##*:}
  kill "$NATS_PID"
  for _ in $(seq 1 300); do kill -0 "$NATS_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$NATS_PID" 2>/dev/null && die "nats-server did not stop within 30 s"
  r0=$(now)
  nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$bench_work/trace.nats" \
    >>"$bench_work/trace.nats.log" 2>&1 &
  NATS_PID=$!
  bench_pids+=("$NATS_PID")
  wait_port "$nats_port" 300 || die "nats-server did not listen again within 30 s"
  got=""
  for _ in $(seq 1 300); do
    got=$(stream_info 2>/dev/null | jq -r '.state.messages // empty' 2>/dev/null) || true
    [ "$got" = "$EXPECT" ] && break
    sleep 0.2
  done
  [ "$got" = "$EXPECT" ] || die "after the restart BATON_EVENTS holds '${got}' messages, expected $EXPECT"
  restart_s=$(awk -v a="$r0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  ok=""
  for _ in $(seq 1 300); do
    q status >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { tail -20 "$bench_work/admin.log" >&2; die "baton admin did not reconnect within 30 s"; }
  log "nats-server restarted: stream recovered in ${restart_s}s; RSS $(( $(vm_kib "$NATS_PID" VmRSS) / 1024 )) MiB"
  for label in "${order[@]}"; do
    time_trace "rqid_$label" 3 "${QID[$label]}"
    time_trace "rmid_$label" 3 "${MID[$label]}"
  done
  rss_restart=$(( $(vm_kib "$NATS_PID" VmRSS) / 1024 ))
fi

# ---------------------------------------------------------------- results --------------------
row() { # NAME LABEL
  local w=${WALL[$1]} c=${CPU[$1]}
  read -r mn md mx <<<"$w"
  local v="-"
  # Per case: every run under the target (the slowest, not the median).
  case $1 in *qid_* | *mid_*) v=$(awk -v m="$mx" -v t="$TARGET_MS" 'BEGIN { print (m < t) ? "MET" : "MISSED" }') ;; esac
  printf '%-46s %6s %6s %6s %13s  %-6s  %s\n' "$2" "$mn" "$md" "$mx" "${c% *} / ${c#* }" "$v" "${WALL_ALL[$1]}"
}
echo
echo "== baton queue trace over $events_stored events (+ $MESSAGES Message-ID records) =="
echo "machine: nproc $(nproc); $nats_version; baton $("$BATON" --version | awk '{print $2}') ($BATON); runs per case: $RUNS"
echo "stream BATON_EVENTS: $stored messages, $stored_bytes bytes ($mib MiB, $per_msg B per message); nats-server RSS $((nats_rss / 1024)) MiB after the fill"
echo "fill: ${fill_t}s ($(awk -v n="$stored" -v t="$fill_t" 'BEGIN { printf "%.0f", n / (t > 0 ? t : 1) }') msg/s with PubAcks, generator CPU ${gen_cpu}s); deferred ${DEFER_LAG} / delivered ${DELIVER_LAG} messages after accepted"
printf '%-46s %6s %6s %6s %13s  %-6s  %s\n' "case (baton queue -o json ...)" "min" "median" "max" "cpu api/nats" "max<1s" "all wall ms"
row status "status (reference: CLI start + one call)"
for label in "${order[@]}"; do
  row "qid_$label" "trace <queue id>, $label (message ${POS[$label]})"
  row "mid_$label" "trace <Message-ID>, $label"
done
row unknown "trace <unknown queue id> (not found; info)"
if [ -n "$restart_s" ]; then
  echo "after a nats-server restart (stream recovered in ${restart_s}s; nats-server RSS ${rss_restart} MiB after these runs):"
  for label in "${order[@]}"; do
    row "rqid_$label" "  trace <queue id>, $label"
    row "rmid_$label" "  trace <Message-ID>, $label"
  done
fi
echo "(wall ms from CLI start to exit; cpu: CPU ms per run of baton admin / nats-server)"
for label in "${order[@]}"; do
  echo "$label: queue id ${QID[$label]}, Message-ID ${MID[$label]}: ${RESULT[qid_$label]}; by Message-ID ${RESULT[mid_$label]}"
done
worst=0
for label in "${order[@]}"; do
  for k in qid mid rqid rmid; do
    [ -n "${WALL[${k}_$label]:-}" ] || continue
    read -r _ _ mx <<<"${WALL[${k}_$label]}"
    [ "$mx" -gt "$worst" ] && worst=$mx
  done
done
verdict=$(awk -v m="$worst" -v t="$TARGET_MS" 'BEGIN { print (m < t) ? "MET" : "MISSED" }')
echo "target: trace of a message in < ${TARGET_MS} ms with $events_stored events stored: slowest run of any case ${worst} ms -> $verdict"
echo "($(load_note) at end)"
