#!/usr/bin/env bash
# Two streamgate instances behind nginx, sharing one Redis, on one machine, without root and
# without the network (docs/deployment.md explains every piece):
#
#   redis-server on a loopback port (no persistence: a demo)
#   the replay upstream of `streamgate demo` (recorded answers, no provider keys)
#   two `streamgate serve` with the SAME config file ([state] backend = "redis"), each in its
#     own working directory (its own journal) and on its own port
#   nginx in front of both: least connections, no sticky sessions, unbuffered
#
#   deploy/two-instances.sh            start all, print the URL and curl lines, stop on Ctrl-C
#   deploy/two-instances.sh --check    start all, stream through nginx, verify, stop; exit 0/1
#
# Options: --port N (nginx's port; default 8080, or a free one with --check), --model NAME (the
# model of the check and the curl lines; default demo), --keep (leave the working directory for
# a look at the logs). --check requires the stream to resume, byte for byte, on both
# instances: on the one that generated it and on the other (through Redis).
# Binaries: $STREAMGATE, else target/release/streamgate, else target/debug/streamgate;
# $REDIS_SERVER, else redis-server on PATH or in /usr/bin, /usr/sbin; $NGINX, else nginx on
# PATH or /usr/sbin/nginx. Needs curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECK=0
KEEP=0
PORT=""
MODEL=demo

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --check) CHECK=1 ;;
        --keep) KEEP=1 ;;
        --port)
            [ $# -ge 2 ] || { echo "--port needs a value" >&2; exit 2; }
            PORT=$2
            shift
            ;;
        --port=*) PORT=${1#--port=} ;;
        --model)
            [ $# -ge 2 ] || { echo "--model needs a value" >&2; exit 2; }
            MODEL=$2
            shift
            ;;
        --model=*) MODEL=${1#--model=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$MODEL" =~ ^[A-Za-z0-9._:/=,-]+$ ]] || { echo "--model: letters, digits and ._:/=,- only" >&2; exit 2; }
if [ -n "$PORT" ] && ! [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]]; then
    echo "--port must be 1..65535" >&2
    exit 2
fi

say() { printf '%s\n' "$*" >&2; }
die() { say "two-instances: $*"; exit 1; }

# The first of the candidates that is an executable file.
first_executable() {
    local c
    for c in "$@"; do
        if [ -n "$c" ] && [ -f "$c" ] && [ -x "$c" ]; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

SG=$(first_executable "${STREAMGATE:-}" "$ROOT/target/release/streamgate" "$ROOT/target/debug/streamgate") ||
    die "no streamgate binary: cargo build --release (or set STREAMGATE=/path/to/streamgate)"
REDIS=$(first_executable "${REDIS_SERVER:-}" "$(command -v redis-server || true)" /usr/bin/redis-server /usr/sbin/redis-server) ||
    die "redis-server is not installed (apt-get install redis-server, or set REDIS_SERVER)"
NGINX=$(first_executable "${NGINX:-}" "$(command -v nginx || true)" /usr/sbin/nginx /usr/local/sbin/nginx) ||
    die "nginx is not installed (apt-get install nginx, or set NGINX)"
command -v curl >/dev/null || die "curl is not installed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/streamgate-two.XXXXXX")
PIDS=()
NAMES=()

# Stops what this script started, newest first: SIGTERM, then SIGKILL after 10 s.
cleanup() {
    local status=$? i pid deadline
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + 10))
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[$i]}
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "${NAMES[$i]} (pid $pid) did not stop within 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ] || { [ "$CHECK" = 1 ] && [ "$status" != 0 ]; }; then
        say "logs and configs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background with its output in $WORK/NAME.log; remembers its pid.
start() {
    local name=$1
    shift
    : >"$WORK/$name.log"
    "$@" >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

# Whether something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets the variable named $1 to a port nobody listens on now, not handed out before by this
# script (not in a subshell: TAKEN must remember it): below 32768, where Linux's ephemeral
# ports (net.ipv4.ip_local_port_range) do not reach, so that no process started later takes
# it for a port 0 listener or an outgoing connection.
TAKEN=" "
free_port() {
    local p _
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 12768))
        case "$TAKEN" in *" $p "*) continue ;; esac
        if ! listening "$p"; then
            TAKEN="$TAKEN$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until NAME (the last process started, pid $2) listens on $3, at most $4 seconds.
wait_listening() {
    local name=$1 pid=$2 port=$3 deadline=$((SECONDS + $4))
    until listening "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$WORK/$name.log" >&2 || true
            die "$name exited before listening on $port"
        fi
        [ $SECONDS -lt $deadline ] || die "$name did not listen on $port within $4 s"
        sleep 0.1
    done
}

if [ -z "$PORT" ]; then
    if [ "$CHECK" = 1 ] || listening 8080; then free_port PORT; else PORT=8080; fi
fi
listening "$PORT" && die "port $PORT is taken (--port N)"
TAKEN="$TAKEN$PORT "
free_port REDIS_PORT
free_port PORT_A
free_port PORT_B

# --- Redis -------------------------------------------------------------------------------------
mkdir -p "$WORK/redis"
start redis "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
    --save "" --appendonly no --dir "$WORK/redis"
wait_listening redis "${PIDS[-1]}" "$REDIS_PORT" 30

# --- The upstream: the demo's replay of recorded answers ------------------------------------
# `streamgate demo --json` prints {"gateway":URL,"replay":URL}; only the replay is used (the
# demo's own gateway idles on a free port).
start upstream "$SG" demo --listen 127.0.0.1:0 --json
deadline=$((SECONDS + 60))
REPLAY=""
while [ -z "$REPLAY" ]; do
    REPLAY=$(sed -n 's/.*"replay":"\(http:\/\/[^"]*\)".*/\1/p' "$WORK/upstream.log" | head -n 1)
    [ -n "$REPLAY" ] && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -n 20 "$WORK/upstream.log" >&2; die "streamgate demo exited"; }
    [ $SECONDS -lt $deadline ] || die "streamgate demo printed no URL within 60 s"
    sleep 0.1
done

# --- The gateways: one config file for both -------------------------------------------------
# Only the listen address (--listen) and the working directory (where the relative journal
# directory lives: one gateway per journal) differ between instances.
KEY="sg-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
ADMIN_KEY="adm-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$WORK/streamgate.toml" <<EOF
# The same file for every instance (docs/deployment.md, "What instances must share").
[server]
listen = "127.0.0.1:8080"               # each instance gets its own with --listen
admin_key_env = "STREAMGATE_ADMIN_KEY"  # /admin/* needs it: nginx forwards to a loopback listener
max_connections_per_address = 10000     # every client connection comes from nginx's address

[state]
backend = "redis"
url_env = "STREAMGATE_REDIS"            # the URL may hold a password: never in the file
prefix = "streamgate"
pool_size = 4
timeout_ms = 1000
lease_ms = 3000

[keys.demo]
env = "STREAMGATE_DEMO_KEY"             # the same keys on every instance

[providers.openai]
dialect = "openai"
base_url = "$REPLAY/v1"

[providers.anthropic]
dialect = "anthropic"
base_url = "$REPLAY"

[models.demo]
route = "anthropic/tool_use_with_text"

[models.demo-openai]
route = "openai/tool_calls_parallel"
EOF

for instance in a b; do
    mkdir -p "$WORK/$instance"
    if [ "$instance" = a ]; then port=$PORT_A; else port=$PORT_B; fi
    # A shell for the working directory; exec so that the pid is the gateway's. Its script is
    # quoted on purpose: the arguments come in as $1..$4.
    # shellcheck disable=SC2016
    start "gateway-$instance" env \
        STREAMGATE_REDIS="redis://127.0.0.1:$REDIS_PORT/0" \
        STREAMGATE_DEMO_KEY="$KEY" \
        STREAMGATE_ADMIN_KEY="$ADMIN_KEY" \
        RUST_LOG="${RUST_LOG:-info}" \
        sh -c 'cd "$1" && exec "$2" serve --config "$3" --listen "$4"' sh \
        "$WORK/$instance" "$SG" "$WORK/streamgate.toml" "127.0.0.1:$port"
done
wait_listening gateway-a "${PIDS[-2]}" "$PORT_A" 60
wait_listening gateway-b "${PIDS[-1]}" "$PORT_B" 60

# --- nginx ----------------------------------------------------------------------------------
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
# As root, nginx hands its workers to `nobody`, who cannot enter this private directory: here
# they stay this script's user, as the gateways do (a real install keeps its packaged user).
NGINX_USER=""
[ "$(id -u)" != 0 ] || NGINX_USER="user $(id -un) $(id -gn);"
cat >"$WORK/nginx/nginx.conf" <<EOF
# docs/deployment.md, "nginx in front" explains each line.
$NGINX_USER
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }

http {
    access_log $WORK/nginx/logs/access.log;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;

    # WebSocket upgrades get "Connection: upgrade"; every other request an empty Connection
    # header, which keeps the upstream connection alive.
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }

    upstream streamgate {
        least_conn;                     # streams are long: balance open connections
        server 127.0.0.1:$PORT_A max_fails=1 fail_timeout=5s;
        server 127.0.0.1:$PORT_B max_fails=1 fail_timeout=5s;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$PORT;
        client_max_body_size 8m;        # = [server] max_body_bytes

        # Per instance, not per cluster: scrape and administer each instance directly.
        location /admin/ { return 404; }
        location = /metrics { return 404; }

        location / {
            proxy_pass http://streamgate;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Last-Event-ID \$http_last_event_id;
            proxy_buffering off;            # every SSE frame goes out as it arrives
            proxy_request_buffering off;
            proxy_cache off;
            gzip off;
            proxy_read_timeout 3600s;       # a stream may think for minutes between events
            proxy_send_timeout 3600s;
            proxy_connect_timeout 2s;       # a dead instance is skipped quickly
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }
    }
}
EOF
"$NGINX" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" ||
    die "nginx refused the config ($WORK/nginx/nginx.conf)"
start nginx "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    -g "daemon off;"
wait_listening nginx "${PIDS[-1]}" "$PORT" 30

URL="http://127.0.0.1:$PORT"
BODY="{\"model\":\"$MODEL\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

# --- --check: one stream through nginx, then its resume ---------------------------------------

# The `id:` lines of an SSE body, one per line.
sse_ids() { sed -n 's/^id: \{0,1\}\([0-9]*\)\r\{0,1\}$/\1/p' "$1"; }
# The `id:`, `event:` and `data:` lines of the frames after seq $2.
sse_after() {
    awk -v after="$2" '
        /^id:/ { id = $0; sub(/^id: ?/, "", id); sub(/\r$/, "", id); keep = (id + 0 > after + 0) }
        keep && /^(id|event|data):/ { print }
    ' "$1"
}

check() {
    local headers="$WORK/check.headers" body="$WORK/check.sse" id ids first last n mid
    curl -sS -N --max-time 60 -D "$headers" -o "$body" "$URL/v1/streams" \
        -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
        -H 'streamgate-dialect: openai' -d "$BODY" || die "check: the request through nginx failed"
    head -n 1 "$headers" | grep -q ' 200' || { cat "$headers" "$body" >&2; die "check: not 200"; }
    id=$(sed -n 's/^streamgate-stream-id: *\([A-Za-z0-9._:-]*\).*/\1/ip' "$headers" | head -n 1)
    [ -n "$id" ] || die "check: no streamgate-stream-id header"
    ids=$(sse_ids "$body")
    n=$(printf '%s\n' "$ids" | grep -c . || true)
    [ "$n" -ge 3 ] || die "check: only $n events"
    first=$(printf '%s\n' "$ids" | head -n 1)
    last=$(printf '%s\n' "$ids" | tail -n 1)
    [ "$(seq "$first" "$last")" = "$ids" ] || die "check: the seqs are not consecutive: $ids"
    grep -q '^event: stream.end' "$body" || die "check: no stream.end"
    [ "$(grep '^event:' "$body" | tail -n 1)" = "event: stream.end" ] ||
        die "check: stream.end is not the last event"
    if grep -q '"type":"stream.end".*"reason":"error"' "$body"; then
        die "check: the stream ended in an error: $(grep '"type":"error"' "$body" | head -n 1)"
    fi
    say "check: stream $id through nginx: $n events, seqs $first..$last, ended with stream.end"

    # Unbuffered: a slow answer (the replay drips one frame per 100 ms) must arrive event by
    # event through nginx, its first event long before its last.
    local stamps="$WORK/check.stamps" spread_ms
    curl -sS -N --max-time 60 "$URL/v1/streams" -H "authorization: Bearer $KEY" \
        -H 'content-type: application/json' -H 'streamgate-dialect: openai' \
        -d '{"model":"anthropic/slow:text_basic","stream":true,"messages":[{"role":"user","content":"hi"}]}' |
        while IFS= read -r line; do
            case "$line" in id:*) date +%s%N ;; esac
        done >"$stamps" || die "check: the slow stream through nginx failed"
    [ "$(grep -c . "$stamps")" -ge 5 ] || die "check: the slow stream through nginx is too short"
    spread_ms=$((($(tail -n 1 "$stamps") - $(head -n 1 "$stamps")) / 1000000))
    [ "$spread_ms" -ge 500 ] ||
        die "check: a slow stream came through nginx all at once (first to last event: $spread_ms ms)"
    say "check: a slow stream came through nginx event by event (first to last event: $spread_ms ms)"

    # The WebSocket door through nginx: the upgrade passes (curl then waits for frames it does
    # not speak until --max-time; the headers are what count).
    curl -sS -N --http1.1 --max-time 2 -D "$WORK/check.ws" -o /dev/null "$URL/v1/ws" \
        -H "authorization: Bearer $KEY" -H 'connection: upgrade' -H 'upgrade: websocket' \
        -H 'sec-websocket-version: 13' -H 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==' \
        -H 'sec-websocket-protocol: streamgate.v1' 2>/dev/null || true
    head -n 1 "$WORK/check.ws" | grep -q ' 101' ||
        die "check: the WebSocket upgrade through nginx got $(head -n 1 "$WORK/check.ws")"
    grep -qi '^sec-websocket-protocol: *streamgate\.v1' "$WORK/check.ws" ||
        die "check: the WebSocket upgrade through nginx lost its subprotocol"
    say "check: WebSocket upgrade through nginx: 101, subprotocol streamgate.v1"

    # Resume from the middle on each instance directly: the events after it, byte for byte.
    mid=$(((first + last) / 2))
    sse_after "$body" "$mid" >"$WORK/check.expected"
    local name port code
    for name in a b; do
        if [ "$name" = a ]; then port=$PORT_A; else port=$PORT_B; fi
        code=$(curl -sS -N --max-time 60 -o "$WORK/check.resume-$name" -w '%{http_code}' \
            "http://127.0.0.1:$port/v1/streams/$id" -H "authorization: Bearer $KEY" \
            -H "last-event-id: $mid") || code=000
        if [ "$code" = 200 ] &&
            sse_after "$WORK/check.resume-$name" "$mid" | cmp -s - "$WORK/check.expected"; then
            say "check: resumed after seq $mid on instance $name: the same $((last - mid)) events"
        else
            die "check: resume after seq $mid on instance $name: HTTP $code, not the events expected"
        fi
    done
    say "check: ok"
}

if [ "$CHECK" = 1 ]; then
    check
    exit 0
fi

cat <<EOF

Two streamgate instances behind nginx, sharing Redis:
    nginx        $URL            (logs: $WORK/nginx/logs)
    instance a   http://127.0.0.1:$PORT_A  (log: $WORK/gateway-a.log)
    instance b   http://127.0.0.1:$PORT_B  (log: $WORK/gateway-b.log)
    redis        redis://127.0.0.1:$REDIS_PORT/0
    upstream     $REPLAY  (recorded answers)
    config       $WORK/streamgate.toml (the same for both)
    gateway key  $KEY
    admin key    $ADMIN_KEY (per instance: /admin/ and /metrics are not served through nginx)

Start a stream (its id is in the streamgate-stream-id header):
  curl -sN -D - $URL/v1/streams -H 'authorization: Bearer $KEY' \\
    -H 'content-type: application/json' -H 'streamgate-dialect: openai' \\
    -d '$BODY'

Resume it after seq 5, on whichever instance nginx picks:
  curl -sN $URL/v1/streams/STREAM_ID -H 'authorization: Bearer $KEY' -H 'last-event-id: 5'

The OpenAI door through nginx:
  curl -sN $URL/v1/chat/completions -H 'authorization: Bearer $KEY' \\
    -H 'content-type: application/json' -d '$BODY'

An instance's streams:
  curl -s http://127.0.0.1:$PORT_A/admin/streams -H 'authorization: Bearer $ADMIN_KEY'

Ctrl-C stops everything.
EOF

# Until Ctrl-C, or until one of the processes exits.
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            tail -n 20 "$WORK/${NAMES[$i]}.log" >&2 || true
            die "${NAMES[$i]} exited"
        fi
    done
    sleep 1
done
