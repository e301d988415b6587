#!/usr/bin/env bash
# Compares what the module costs nginx with what nginx costs alone, on
# loopback, with wrk: an accepted job against a plain proxy_pass of the same
# request, and a replay and an early rejection against a bare `return`.
#
#   bash t/bench/bench.sh [seconds] [connections]
#
# Needs wrk (apt-get install wrk) and a built module (make).  Starts two
# nginx instances on 127.0.0.1:18480-18481 and stops them by PID at exit.
# wrk runs on CPU 0 and both nginx on CPU 1, so that nginx's CPU is what
# runs out and what is compared; each case runs three times, the median
# is reported.

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

digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
cat > "$dir/directory.json" <<JSON
{"keys": [{"sha256": "$digest", "org": "org_bench",
           "scopes": ["influencers:write"]}],
 "projects": [{"id": "$project", "org": "org_bench",
               "targetGender": "female"}]}
JSON

temps="client_body_temp_path $dir/b; proxy_temp_path $dir/p;
       fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;"

cat > "$dir/be.conf" <<CONF
worker_processes 1; pid $dir/be.pid; error_log $dir/be.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  server { listen 127.0.0.1:18481; keepalive_requests 100000;
    location / { return 202 '{"accepted":true}'; } } }
CONF

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

taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"
taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/gw.conf"
sleep 0.5

body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'

script() {   # $1: extra header line, or empty
    cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
$1
LUA
}

run() {      # $1: name, $2: path, $3: variable for the median
    local rps i
    rps=$(for i in 1 2 3; do
              taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/post.lua" \
                  "http://127.0.0.1:18480$2" | awk '/Requests\/sec/ {print $2}'
          done | sort -n | sed -n 2p)
    printf '%-34s %10s req/s\n' "$1" "$rps"
    eval "$3=$rps"
}

script ""
run "proxy_pass (no module)" "/plain/x" plain
run "module: accepted, forwarded" "/v1/projects/$project/influencers" accepted
run "return 202 (no module)" "/return/x" bare

script 'wrk.headers["Idempotency-Key"] = "bench-replay"'
curl -s -o /dev/null -X POST -H "Authorization: Bearer $key" \
     -H 'Content-Type: application/json' -H 'Idempotency-Key: bench-replay' \
     -d "$body" "http://127.0.0.1:18480/v1/projects/$project/influencers"
run "module: replay" "/v1/projects/$project/influencers" replay

script 'wrk.headers["Authorization"] = "Bearer wrong"'
run "module: early rejection (401)" "/v1/projects/$project/influencers" reject

awk -v p="$plain" -v a="$accepted" -v b="$bare" -v r="$replay" -v j="$reject" \
    'BEGIN {
        printf "accepted vs proxy_pass: %+.1f%% throughput\n", (a / p - 1) * 100;
        printf "replay vs return:       %+.1f%% throughput\n", (r / b - 1) * 100;
        printf "rejection vs return:    %+.1f%% throughput\n", (j / b - 1) * 100;
    }'

if grep -E '\[(alert|crit|emerg)\]' "$dir/gw.log"; then
    echo "errors in the gateway's log" >&2
    exit 1
fi
