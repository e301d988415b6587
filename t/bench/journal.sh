#!/usr/bin/env bash
# What crash safety costs: accepted requests, each with a new
# Idempotency-Key, against a zone with `state=` (every accept appended to
# the journal, synced once a second) and against the same zone without it.
#
#   bash t/bench/journal.sh [seconds] [connections] [rate]
#
# Needs wrk and perf (apt-get install wrk linux-perf) and a built module.
# Starts nginx on 127.0.0.1:18490-18491 and stops it by PID at exit.  wrk
# runs on CPU 0 and both nginx on CPU 1.  Two kinds of run per case, each
# three times (the median is reported):
#   - as fast as it goes: requests per second and the gateway worker's CPU
#     per request (perf stat task-clock), as t/bench/bench.sh does;
#   - at a fixed rate (default 10000/s, paced by wrk's Lua delay()): the
#     worker's CPU use in percent of a core, the figure an operator sizes by.

set -euo pipefail

secs=${1:-10}
conns=${2:-32}
rate=${3:-10000}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
dir=$(mktemp -d /tmp/influencers-journal.XXXXXX)
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d

cleanup() {
    for p in "$dir"/gw.pid "$dir"/be.pid; do
        [ -f "$p" ] && kill -QUIT "$(cat "$p")" 2>/dev/null || true
    done
    sleep 1
    rm -rf "$dir"
}
trap cleanup EXIT

. "$(dirname "$0")/common.sh"
bench_directory


bench_backend_conf 18491

gateway() {  # $1: extra zone parameters
    [ -f "$dir/gw.pid" ] && kill -QUIT "$(cat "$dir/gw.pid")" && sleep 1
    rm -f "$dir"/jobs.state*
    cat > "$dir/gw.conf" <<CONF
load_module $module;
worker_processes 1; pid $dir/gw.pid; error_log $dir/gw.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:512m org_share=100% $1;
  upstream render { server 127.0.0.1:18491; keepalive 64; }
  server { listen 127.0.0.1:18490; keepalive_requests 1000000;
    location /v1/projects/ {
      influencers zone=jobs; influencers_backend /_render;
      influencers_directory $dir/directory.json; }
    location = /_render { internal; proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ignore_client_abort on; } } }
CONF
    taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/gw.conf"
    sleep 0.5
    worker=$(pgrep -P "$(cat "$dir/gw.pid")" | head -n 1)
}

script() {   # $1: requests per second per connection, 0: no pacing
    cat > "$dir/post.lua" <<LUA
local n, tag = 0, tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.body = '{"prompt":"journal bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
request = function()
    n = n + 1
    wrk.headers["Idempotency-Key"] = "j-" .. tag .. "-" .. n
    return wrk.format()
end
local per = $1
if per > 0 then
    delay = function() return 1000 / per end
end
LUA
}

one() {      # prints "rps us-per-request cpu-percent p99 max"
    local rps ms window
    window=$(awk -v s="$secs" 'BEGIN { print (s > 2) ? s - 2 : s / 2 }')
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$dir/post.lua" \
        "http://127.0.0.1:18490/v1/projects/$project/influencers" \
        > "$dir/wrk.out" &
    sleep 1
    perf stat -x, -e task-clock -p "$worker" -o "$dir/perf.out" \
        -- sleep "$window" > /dev/null 2>&1 || true
    ms=$(awk -F, '/task-clock/ {print $1}' "$dir/perf.out")
    wait
    rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.out")
    max=$(awk '$1 == "Latency" {print $4; exit}' "$dir/wrk.out")
    awk -v r="$rps" -v m="${ms:-0}" -v w="$window" -v p="$p99" -v x="$max" \
        'BEGIN { printf "%s %.2f %.1f %s %s\n", r,
                 (m > 0) ? m * 1000 / (r * w) : 0, m / (w * 10), p, x }'
}

run() {      # $1: name
    local out
    out=$(for i in 1 2 3; do one; done | sort -k2 -n | sed -n 2p)
    set -- "$1" $out
    printf '%-20s %9s req/s %7s us/req %5s%% of a core  p99 %-8s max %s\n' \
        "$1" "$2" "$3" "$4" "$5" "$6"
}

taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"

echo "== as fast as it goes ($conns connections)"
script 0
gateway ""
run "no state file"
gateway "state=$dir/jobs.state"
run "state= (journal)"
ls -la "$dir"/jobs.state.journal.* | awk '{ s += $5 } END { printf "journal: %d bytes\n", s }'

echo "== paced, up to $rate accepts/s"
script "$(awk -v r="$rate" -v c="$conns" 'BEGIN { print r / c }')"
gateway ""
run "no state file"
gateway "state=$dir/jobs.state"
run "state= (journal)"

if grep -E '\[(alert|crit|emerg)\]' "$dir/gw.log"; then
    echo "errors in the gateway's log" >&2
    exit 1
fi
