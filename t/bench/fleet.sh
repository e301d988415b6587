#!/usr/bin/env bash
# What fleet mode costs: the module alone (its zone) against the module
# with influencers_redis (Redis shares the idempotency, the zone is its
# cache), in one run, on loopback, with wrk.
#
#   bash t/bench/fleet.sh [seconds] [connections]
#
# Needs wrk, perf (apt-get install wrk linux-perf), redis-server and
# redis-cli (apt-get install redis-server) and a built module (make).
# Starts, on 127.0.0.1:18500-18503, a backend stand-in (nginx `return`),
# a single-node gateway, a fleet gateway and redis-server (no
# persistence), and stops them by PID at exit.  wrk runs on CPU 0; nginx
# and Redis on CPU 1 (so requests per second are what one core serves,
# Redis included).  Each case runs three times; the median by the gateway
# worker's CPU per request is reported:
#   - requests per second (wrk) and non-2xx answers;
#   - the gateway worker's CPU per request (perf stat task-clock over the
#     middle of the run), as t/bench/bench.sh;
#   - fleet only: Redis commands per request (EVALSHA + EVAL calls from
#     INFO commandstats, before vs after, over wrk's request count) and
#     Redis's own CPU per request (utime + stime of /proc/<pid>/stat over
#     the same window as perf);
# then Redis's memory per entry: MEMORY USAGE of a few keys, and
# used_memory after minus before N accepts over the keys added.
#
# Cases: accept (a new Idempotency-Key per request, made by the wrk Lua
# script), replay (one key, accepted once before), and no key.

set -euo pipefail

secs=${1:-10}
conns=${2:-32}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
redis_server=${INFLUENCERS_REDIS_SERVER:-/usr/bin/redis-server}
dir=$(mktemp -d /tmp/influencers-fleet-bench.XXXXXX)
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d
p_single=18500 p_backend=18501 p_fleet=18502 p_redis=18503
redis_pid=

for tool in wrk perf redis-cli "$redis_server"; do
    command -v "$tool" > /dev/null || { echo "fleet.sh: needs $tool" >&2; exit 1; }
done
[ -f "$module" ] || { echo "fleet.sh: no module at $module (make)" >&2; exit 1; }

cleanup() {
    for p in "$dir"/single.pid "$dir"/fleet.pid "$dir"/be.pid; do
        [ -f "$p" ] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
    if [ -n "$redis_pid" ]; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$redis_pid" 2>/dev/null || true
    fi
    sleep 0.5
    rm -rf "$dir"
}
trap cleanup EXIT

rcli() { redis-cli -h 127.0.0.1 -p "$p_redis" "$@"; }

. "$(dirname "$0")/common.sh"
bench_directory


bench_backend_conf $p_backend

gateway_conf() {   # $1: name, $2: port, $3: influencers_redis line or empty
    cat > "$dir/$1.conf" <<CONF
load_module $module;
worker_processes 1; pid $dir/$1.pid; error_log $dir/$1.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:512m org_share=100%;
  $3
  upstream render { server 127.0.0.1:$p_backend; keepalive 64; }
  server { listen 127.0.0.1:$2; keepalive_requests 1000000;
    location /v1/projects/ {
      influencers zone=jobs; influencers_backend /_render;
      influencers_directory $dir/directory.json; }
    location = /_stats { influencers_stats zone=jobs; }
    location = /_render { internal; proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ignore_client_abort on; } } }
CONF
}

gateway_conf single $p_single ""
gateway_conf fleet $p_fleet "influencers_redis zone=jobs 127.0.0.1:$p_redis;"

taskset -c 1 "$redis_server" --port "$p_redis" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$dir" --daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
for _ in $(seq 50); do
    [ "$(rcli ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(rcli ping)" = PONG ] || { echo "fleet.sh: redis-server did not start" >&2; exit 1; }

taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"
taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/single.conf"
taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/fleet.conf"
sleep 0.5

body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'
tck=$(getconf CLK_TCK)

script() {   # $1: accept | replay | nokey
    cat > "$dir/post.lua" <<LUA
local n, tag = 0, tostring(math.random(1, 1e9)) .. "-" .. tostring(os.time())
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
local mode = "$1"
if mode == "replay" then
    wrk.headers["Idempotency-Key"] = "bench-replay"
end
if mode == "accept" then
    request = function()
        n = n + 1
        wrk.headers["Idempotency-Key"] = "fb-" .. tag .. "-" .. n
        return wrk.format()
    end
end
LUA
}

evals() {
    rcli info commandstats | tr -d '\r' | awk -F'[=,:]' \
        '/^cmdstat_(evalsha|eval):/ { s += $3 } END { print s + 0 }'
}

redis_ticks() { awk '{ print $14 + $15 }' "/proc/$redis_pid/stat"; }

one() {      # $1: port; prints "rps gw-us/req non2xx redis-cmds/req redis-us/req"
    local worker rps ms window e0 e1 r0 r1 total non2xx
    worker=$(pgrep -P "$(cat "$dir/$2.pid")" | head -n 1)
    window=$(awk -v s="$secs" 'BEGIN { print (s > 2) ? s - 2 : s / 2 }')
    e0=$(evals)
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/post.lua" \
        "http://127.0.0.1:$1/v1/projects/$project/influencers" > "$dir/wrk.out" &
    sleep 1
    r0=$(redis_ticks)
    perf stat -x, -e task-clock -p "$worker" -o "$dir/perf.out" \
        -- sleep "$window" > /dev/null 2>&1 || true
    r1=$(redis_ticks)
    ms=$(awk -F, '/task-clock/ {print $1}' "$dir/perf.out")
    wait
    e1=$(evals)
    rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")
    total=$(awk '/requests in/ {print $1}' "$dir/wrk.out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.out")
    awk -v r="$rps" -v m="${ms:-0}" -v w="$window" -v n="${non2xx:-0}" \
        -v e="$((e1 - e0))" -v t="$total" -v rt="$((r1 - r0))" -v hz="$tck" \
        'BEGIN { printf "%s %.2f %s %.3f %.2f\n", r,
                 (m > 0) ? m * 1000 / (r * w) : 0, n,
                 (t > 0) ? e / t : 0,
                 (r > 0) ? (rt / hz) * 1e6 / (r * w) : 0 }'
}

row() {      # $1: name, $2: port, $3: gateway name, $4: fleet (1) or not
    local out
    out=$(for i in 1 2 3; do one "$2" "$3"; done | sort -k2 -n | sed -n 2p)
    set -- "$1" "$4" $out
    if [ "$2" = 1 ]; then
        printf '| %-30s | %9s | %9s | %6s | %13s | %12s |\n' "$1" "$3" "$4" "$5" "$6" "$7"
    else
        printf '| %-30s | %9s | %9s | %6s | %13s | %12s |\n' "$1" "$3" "$4" "$5" "-" "-"
    fi
}

post() {     # $1: port, $2: Idempotency-Key
    curl -s -o /dev/null -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: $2" -d "$body" \
        "http://127.0.0.1:$1/v1/projects/$project/influencers"
}

echo "fleet.sh: ${secs}s x3 per case, $conns connections, wrk on CPU 0, nginx and Redis on CPU 1"
echo
echo '| case                           |     req/s | gw us/req | non2xx | Redis cmd/req | Redis us/req |'
echo '| ------------------------------ | --------: | --------: | -----: | ------------: | -----------: |'

script accept
rcli flushall > /dev/null
m0=$(rcli info memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}')
k0=$(rcli dbsize)
row "single node: accept (new key)" $p_single single 0
row "fleet: accept (new key)" $p_fleet fleet 1
m1=$(rcli info memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}')
k1=$(rcli dbsize)

script replay
[ "$(post $p_single bench-replay)" = 202 ] || echo "single: the replay key was not accepted" >&2
[ "$(post $p_fleet bench-replay)" = 202 ] || echo "fleet: the replay key was not accepted" >&2
row "single node: replay" $p_single single 0
row "fleet: replay (cached here)" $p_fleet fleet 1

script nokey
row "single node: no key" $p_single single 0
row "fleet: no key" $p_fleet fleet 1

echo
keys=$((k1 - k0))
echo "Redis memory: $keys keys added by the fleet accepts; used_memory $m0 -> $m1 bytes:" \
     "$(awk -v a="$m0" -v b="$m1" -v k="$keys" 'BEGIN { printf "%.0f", (k > 0) ? (b - a) / k : 0 }') bytes per entry"
sample=$(rcli --scan --pattern 'influencers:*' | head -n 5 || true)
for k in $sample; do
    echo "  MEMORY USAGE $k: $(rcli memory usage "$k" samples 0) bytes," \
         "value $(rcli strlen "$k" 2>/dev/null || echo '?') bytes, type $(rcli type "$k")"
done
echo "fleet gateway stats: $(curl -s "http://127.0.0.1:$p_fleet/_stats")"

if grep -E '\[(alert|crit|emerg)\]' "$dir/single.log" "$dir/fleet.log"; then
    echo "errors in a gateway's log" >&2
    exit 1
fi
