#!/usr/bin/env bash
# docker/compose.yaml's topology without Docker: the same configuration
# files (docker/fleet/), run by the stock /usr/sbin/nginx on this machine,
# with every name and port moved to loopback.  What it checks:
#
#   - docker/fleet/keygen.sh writes a key and a directory file;
#   - `nginx -t` of backend.conf, and of gateway.conf for both gateways
#     (the Redis and backend names replaced by 127.0.0.1 ports, the
#     modules-enabled include by `load_module MODULE`);
#   - then, unless --config-only: a redis-server, the backend and both
#     gateways run; a keyed request to gateway-a gets 202, the same request
#     to gateway-b replays it (Idempotent-Replayed, same Location) with no
#     second job at the backend, a new key on gateway-b is a new job, and
#     the backend's JSON log holds the jobs' bodies.
#
#   bash docker/fleet-check.sh [--config-only] [MODULE]
#
# MODULE defaults to build/ngx_http_influencers_module.so (`make`).  Needs
# nginx, redis-server (not for --config-only) and curl.  Everything runs on
# 127.0.0.1 under a temporary directory; each process it started is
# stopped by its PID, and the directory removed, on exit.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=/usr/sbin/nginx
PROJECT_ID=7f3c9a2e-4b1d-4e8a-9c5f-2d6b8e0a1f43

config_only=0
if [ "${1:-}" = --config-only ]; then
    config_only=1
    shift
fi
MODULE=${1:-$REPO/build/ngx_http_influencers_module.so}
case "$MODULE" in /*) ;; *) MODULE="$PWD/$MODULE" ;; esac

passed=0
failed=0
tmp=
pids=()         # redis-server, started here
nginx_pids=()   # pid files of the nginx masters started here

ok()   { passed=$((passed + 1)); printf 'ok %d - %s\n' "$((passed + failed))" "$*"; }
fail() {
    failed=$((failed + 1))
    printf 'not ok %d - %s\n' "$((passed + failed))" "$*"
    exit 1
}
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

not() { ! "$@"; }

wait_gone() {   # wait_gone PID SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2> /dev/null || return 0
        sleep 0.1
    done
    return 1
}

stop_pid() {
    local pid=$1 sig=$2
    [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null || return 0
    kill -"$sig" "$pid" 2> /dev/null || true
    wait_gone "$pid" 10 || { kill -KILL "$pid" 2> /dev/null || true; wait_gone "$pid" 3 || true; }
}

cleanup() {
    local rc=$? f pid
    set +e
    for f in "${nginx_pids[@]}"; do
        pid=$(cat "$f" 2> /dev/null)
        [[ "$pid" =~ ^[0-9]+$ ]] && stop_pid "$pid" TERM
    done
    for pid in "${pids[@]}"; do
        stop_pid "$pid" TERM
    done
    if [ "$rc" != 0 ] && [ -n "$tmp" ]; then
        for f in "$tmp"/*.error.log "$tmp"/redis.log; do
            [ -s "$f" ] || continue
            echo "---- $f (last 20 lines) ----" >&2
            tail -n 20 "$f" >&2
        done
    fi
    [ -n "$tmp" ] && rm -rf "$tmp"
    [ "$rc" != 0 ] && [ "$failed" = 0 ] && failed=1
    printf '\nfleet-check: %d passed, %d failed\n' "$passed" "$failed"
    exit "$rc"
}
trap cleanup EXIT

port_busy() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 30000))
        if ! port_busy "$p" && [[ " ${used_ports:-} " != *" $p "* ]]; then
            used_ports="${used_ports:-} $p"
            echo "$p"
            return 0
        fi
    done
    echo "fleet-check: no free port" >&2
    return 1
}

wait_port() {   # wait_port PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_busy "$1" && return 0
        sleep 0.1
    done
    return 1
}

[ -f "$MODULE" ] || { echo "fleet-check: $MODULE not found (run make)" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "fleet-check: $NGINX not found" >&2; exit 1; }

tmp=$(mktemp -d /tmp/influencers-fleet-check.XXXXXX)
chmod 755 "$tmp"
mkdir "$tmp/temp"

REDIS_PORT=$(free_port)
BACKEND_PORT=$(free_port)
BACKEND_INNER=$(free_port)
PORT_A=$(free_port)
PORT_B=$(free_port)

echo "==> keygen.sh (KEYS_DIR=$tmp/keys)"
KEYS_DIR="$tmp/keys" sh "$REPO/docker/fleet/keygen.sh" "$REPO/docker/directory.example.json" \
    > "$tmp/keygen.out"
KEY=$(cat "$tmp/keys/api-key")
check "keygen.sh wrote a key and the directory file with its SHA-256" \
    grep -q "$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)" "$tmp/keys/directory.json"
check "keygen.sh prints the key" grep -q "demo API key: $KEY" "$tmp/keygen.out"

# the temp paths nginx would otherwise take in /var/lib/nginx
temp_paths="client_body_temp_path $tmp/temp/body; proxy_temp_path $tmp/temp/proxy; \
fastcgi_temp_path $tmp/temp/fastcgi; uwsgi_temp_path $tmp/temp/uwsgi; \
scgi_temp_path $tmp/temp/scgi;"

# common: no user switch beyond nginx's default, pid and error log in $tmp
localize() {    # localize NAME < conf > conf
    sed -e '/^user www-data;$/d' \
        -e "s|^pid /run/nginx.pid;|pid $tmp/$1.pid;|" \
        -e "s|^error_log stderr \([a-z]*\);|error_log $tmp/$1.error.log \1;|" \
        -e "s|^http {|http {\n    $temp_paths|"
}

localize backend < "$REPO/docker/fleet/backend.conf" \
  | sed -e "s|^        listen 8080;|        listen 127.0.0.1:$BACKEND_PORT;|" \
        -e "s|listen 127.0.0.1:8081;|listen 127.0.0.1:$BACKEND_INNER;|" \
        -e "s|proxy_pass http://127.0.0.1:8081;|proxy_pass http://127.0.0.1:$BACKEND_INNER;|" \
        -e "s|access_log /dev/stdout job;|access_log $tmp/jobs.jsonl job;|" \
  > "$tmp/backend.conf"

for node in a b; do
    port=$PORT_A
    [ "$node" = b ] && port=$PORT_B
    localize "gateway-$node" < "$REPO/docker/fleet/gateway.conf" \
      | sed -e "s|^include /etc/nginx/modules-enabled/\*.conf;|load_module $MODULE;|" \
            -e "s|influencers_redis zone=jobs redis:6379 |influencers_redis zone=jobs 127.0.0.1:$REDIS_PORT |" \
            -e "s|server backend:8080;|server 127.0.0.1:$BACKEND_PORT;|" \
            -e "s|^        listen 8080;|        listen 127.0.0.1:$port;|" \
            -e "s|/etc/influencers/keys/directory.json|$tmp/keys/directory.json|" \
            -e "s|access_log /dev/stdout;|access_log $tmp/gateway-$node.access.log;|" \
      > "$tmp/gateway-$node.conf"
done

leftovers() {   # true when a Docker-only name or path is left in $1 (comments aside)
    sed 's/#.*//' "$1" | grep -nE 'redis:6379|backend:8080|/etc/influencers|/etc/nginx/modules-enabled|/run/nginx|/dev/stdout|listen 8080;|www-data'
}
for c in backend gateway-a gateway-b; do
    check "$c.conf: every Docker name and path replaced" not leftovers "$tmp/$c.conf"
done

echo "==> nginx -t"
for c in backend gateway-a gateway-b; do
    check "nginx -t of docker/fleet/${c%-?}.conf as $c" \
        "$NGINX" -t -q -p "$tmp" -e "$tmp/$c.error.log" -c "$tmp/$c.conf"
done

if [ "$config_only" = 1 ]; then
    exit 0
fi

command -v redis-server > /dev/null || { echo "fleet-check: redis-server not found" >&2; exit 1; }
command -v curl > /dev/null || { echo "fleet-check: curl not found" >&2; exit 1; }

echo "==> the fleet on 127.0.0.1: redis $REDIS_PORT, backend $BACKEND_PORT, gateways $PORT_A and $PORT_B"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction \
    --dir "$tmp" > "$tmp/redis.log" 2>&1 < /dev/null &
pids+=($!)
check "redis-server listens" wait_port "$REDIS_PORT" 10

for c in backend gateway-a gateway-b; do
    nginx_pids+=("$tmp/$c.pid")
    "$NGINX" -p "$tmp" -e "$tmp/$c.error.log" -c "$tmp/$c.conf"
done
check "the backend listens" wait_port "$BACKEND_PORT" 10
check "gateway-a listens" wait_port "$PORT_A" 10
check "gateway-b listens" wait_port "$PORT_B" 10

post() {    # post PORT IDEMPOTENCY-KEY OUT
    curl -sS -o "$3.body" -D "$3.headers" -w '%{http_code}' --max-time 10 \
        -X POST "http://127.0.0.1:$1/v1/projects/$PROJECT_ID/influencers" \
        -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' \
        -H "Idempotency-Key: $2" \
        -d '{"gender":"female","ageRange":"young_adult","prompt":"barista energy, soft morning light"}' \
        > "$3.code"
}
header() { sed -n "s/^$2: *//Ip" "$1.headers" | tr -d '\r'; }
lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }

post "$PORT_A" 8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55 "$tmp/r1"
check "gateway-a: 202 for a new key" test "$(cat "$tmp/r1.code")" = 202
location1=$(header "$tmp/r1" Location)
check "gateway-a: a Location" test -n "$location1"

post "$PORT_B" 8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55 "$tmp/r2"
check "gateway-b, same key: 202" test "$(cat "$tmp/r2.code")" = 202
check "gateway-b, same key: Idempotent-Replayed: true" \
    test "$(header "$tmp/r2" Idempotent-Replayed)" = true
check "gateway-b, same key: the same Location" \
    test "$(header "$tmp/r2" Location)" = "$location1"
check "gateway-b, same key: the same body" cmp -s "$tmp/r1.body" "$tmp/r2.body"

post "$PORT_B" 1c9e7f42-5d3a-4b6e-8a0f-7e2d9c4b3a10 "$tmp/r3"
check "gateway-b, new key: 202" test "$(cat "$tmp/r3.code")" = 202
check "gateway-b, new key: a new Location" \
    test "$(header "$tmp/r3" Location)" != "$location1"

# the access log line is written when the backend's request ends
for ((i = 0; i < 50 && $(lines "$tmp/jobs.jsonl") < 2; i++)); do sleep 0.1; done
check "the backend logged two jobs, not three" test "$(lines "$tmp/jobs.jsonl")" = 2
check "its log holds the jobs' bodies" grep -q 'barista energy' "$tmp/jobs.jsonl"
# shellcheck disable=SC2016 # Perl's variables
check "each line is JSON; the forward's Idempotency-Key is its own jobId" \
    perl -MJSON::PP -ne 'my $l = JSON::PP::decode_json($_);
        my $b = JSON::PP::decode_json($l->{body});
        $b->{jobId} =~ /^job_/ && $l->{idempotencyKey} eq $b->{jobId} or exit 1' \
    "$tmp/jobs.jsonl"

for node in a b; do
    port=$PORT_A
    [ "$node" = b ] && port=$PORT_B
    stats=$(curl -sS --max-time 5 "http://127.0.0.1:$port/_influencers/stats")
    # shellcheck disable=SC2016 # Perl's variables
    check "gateway-$node: stats count Redis round trips" \
        perl -MJSON::PP -e 'my $s = JSON::PP::decode_json($ARGV[0]);
            my ($n) = map { ref $_ eq "HASH" && exists $_->{redisOps} ? $_->{redisOps} : () }
                      ($s, values %$s);
            exit(defined $n && $n > 0 ? 0 : 1)' "$stats"
done

check "no [alert] or [emerg] in the error logs" \
    not grep -lE '\[(alert|emerg)\]' "$tmp"/gateway-a.error.log "$tmp"/gateway-b.error.log "$tmp"/backend.error.log
