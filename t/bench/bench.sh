#!/usr/bin/env bash
# Compares what the module costs nginx with what nginx costs alone, on
# loopback, with wrk: an accepted job against a plain proxy_pass of the same
# request, and a replay and an early rejection against a bare `return`.
#
#   bash t/bench/bench.sh [seconds] [connections]
#
# Needs wrk (apt-get install wrk) and a built module (make).  Starts two
# nginx instances on 127.0.0.1:18480-18481 and stops them by PID at exit.
# wrk runs on CPU 0 and both nginx on CPU 1.  Each case runs three times
# and the median is reported: requests per second, and, where perf(1) is
# installed, the gateway worker's CPU time per request (perf stat
# task-clock over the middle of the run), which does not depend on whether
# wrk or nginx is the one that runs out of CPU.
#
# BENCH_RATE=N sends N requests a second with t/bench/pace.c instead, the
# same load for every case (see below); BENCH_BACKEND_CPU=0 puts the
# backend on wrk's CPU.

set -euo pipefail

secs=${1:-10}
conns=${2:-32}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
dir=$(mktemp -d /tmp/influencers-bench.XXXXXX)
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d

cleanup() {
    for p in "$dir"/gw.pid "$dir"/be.pid; do
        [ -f "$p" ] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
    sleep 0.5
    rm -rf "$dir"
}
trap cleanup EXIT

. "$(dirname "$0")/common.sh"
bench_directory


bench_backend_conf 18481

cat > "$dir/gw.conf" <<CONF
load_module $module;
worker_processes 1; pid $dir/gw.pid; error_log $dir/gw.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:8m;
  upstream render { server 127.0.0.1:18481; keepalive 64; }
  server { listen 127.0.0.1:18480; keepalive_requests 100000;
    location /v1/projects/ {
      influencers zone=jobs; influencers_backend /_render;
      influencers_directory $dir/directory.json; }
    location /plain/ { proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /return/ { return 202 '{"jobId":"job_01HXZ9G7KMV2QX8Y1S5RJW3B7T"}'; }
    location = /_render { internal; proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ignore_client_abort on; } } }
CONF

taskset -c "${BENCH_BACKEND_CPU:-1}" /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"
taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/gw.conf"
sleep 0.5

body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'

# BENCH_RATE=N: instead of wrk as fast as it goes, t/bench/pace.c at N
# requests a second for every case, so that the gateway does the same
# number of requests a second with and without the module, and each batch
# of events per wake-up is alike: CPU per request at an equal load.
rate=${BENCH_RATE:-}

if [ -n "$rate" ]; then
    cc -O2 -Wall -Wextra -o "$dir/pace" "$top/t/bench/pace.c"
fi

# $1: a line for wrk's script, or empty; then, for pace: $2 a header, $3
# the Authorization, $4 the body (each empty: the default)
script() {
    cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
$1
LUA
    pace_header=${2:-}
    pace_auth=${3:-Bearer $key}
    pace_body=${4:-$body}
}

worker=$(pgrep -P "$(cat "$dir/gw.pid")" | head -n 1)

one() {      # $1: path; prints "rps us-per-request"
    local rps ms window
    window=$(awk -v s="$secs" 'BEGIN { print (s > 2) ? s - 2 : s / 2 }')
    if [ -n "$rate" ]; then
        taskset -c 0 "$dir/pace" -q -w 1 -H 'Content-Type: application/json' \
            -H "Authorization: $pace_auth" ${pace_header:+-H "$pace_header"} \
            -b "$pace_body" "$rate" "$secs" "$conns" 127.0.0.1:18480 "$1" \
            > "$dir/wrk.out" &
        sleep 2
    else
        taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/post.lua" \
            "http://127.0.0.1:18480$1" > "$dir/wrk.out" &
        sleep 1
    fi
    ms=0
    if command -v perf > /dev/null; then
        perf stat -x, -e task-clock -p "$worker" -o "$dir/perf.out" \
            -- sleep "$window" > /dev/null 2>&1 || true
        ms=$(awk -F, '/task-clock/ {print $1}' "$dir/perf.out")
    fi
    wait
    if [ -n "$rate" ]; then
        rps=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$dir/wrk.out")
    else
        rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")
    fi
    awk -v r="$rps" -v m="${ms:-0}" -v w="$window" \
        'BEGIN { printf "%s %.2f\n", r, (m > 0) ? m * 1000 / (r * w) : 0 }'
}

run() {      # $1: name, $2: path, $3: variable for the median CPU per request
    local out rps us
    out=$(for i in 1 2 3; do one "$2"; done | sort -k2 -n | sed -n 2p)
    rps=${out% *}
    us=${out#* }
    printf '%-34s %10s req/s %8s us/request\n' "$1" "$rps" "$us"
    eval "$3=$us"
}

script ""
run "proxy_pass (no module)" "/plain/x" plain
run "module: accepted, forwarded" "/v1/projects/$project/influencers" accepted
run "return 202 (no module)" "/return/x" bare

script 'wrk.headers["Idempotency-Key"] = "bench-replay"' \
       'Idempotency-Key: bench-replay'
curl -s -o /dev/null -X POST -H "Authorization: Bearer $key" \
     -H 'Content-Type: application/json' -H 'Idempotency-Key: bench-replay' \
     -d "$body" "http://127.0.0.1:18480/v1/projects/$project/influencers"
run "module: replay" "/v1/projects/$project/influencers" replay

script 'wrk.headers["Authorization"] = "Bearer wrong"' '' 'Bearer wrong'
run "module: early rejection (401)" "/v1/projects/$project/influencers" reject

# a body the schema refuses: 422 with fieldErrors, after the whole parse
bad='{"gender":"robot","ageRange":"young_adult","prompt":"barista energy"}'
script "wrk.body = '$bad'" '' '' "$bad"
run "module: body rejection (422)" "/v1/projects/$project/influencers" invalid

awk -v p="$plain" -v a="$accepted" -v b="$bare" -v r="$replay" -v j="$reject" \
    -v v="$invalid" \
    'BEGIN {
        if (p == 0) { print "(no perf: CPU per request not measured)"; exit }
        printf "accepted vs proxy_pass: %+.1f%% CPU per request\n", (a / p - 1) * 100;
        printf "replay vs return:       %+.1f%% CPU per request\n", (r / b - 1) * 100;
        printf "401 vs return:          %+.1f%% CPU per request\n", (j / b - 1) * 100;
        printf "422 vs return:          %+.1f%% CPU per request\n", (v / b - 1) * 100;
    }'

if grep -E '\[(alert|crit|emerg)\]' "$dir/gw.log"; then
    echo "errors in the gateway's log" >&2
    exit 1
fi
