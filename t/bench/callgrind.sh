#!/usr/bin/env bash
# What each request costs the gateway in instructions, counted by
# callgrind: unlike CPU time, the count does not drift with the machine's
# load, so small changes to the request path can be measured.
#
#   bash t/bench/callgrind.sh [requests] [top]
#
# Starts the stock /usr/sbin/nginx with the module under
# `valgrind --tool=callgrind` (master_process off: the worker is the one
# process), and a plain nginx as the backend (`return 202`, as in
# t/bench/bench.sh), on 127.0.0.1:18490-18491.  The cases: an accept with
# a new Idempotency-Key each, an accept without a key, a replay, a 401, a
# 422 for the body, a 422 for a reused key, and the floors the issue
# measures against: a plain proxy_pass of the same request and a bare
# `return 202`, each sent a request of the module's shape (a path of the
# same length, the same headers and body).
#
# A warm-up request of each case runs first; then, for each case, the
# counters are zeroed (callgrind_control -z), `requests` requests (default
# 200) are sent on one keep-alive connection, and the counters are dumped
# (callgrind_control -d), so startup and warm-up are not counted.  Reports
# instructions per request per case, the ratios the issue's targets are
# about, the `top` (default 10) functions by self cost for each case, and
# each case's instructions by shared object (nginx, the module, jansson,
# libcrypto, libc).
#
# Instructions in user space only: the kernel's share of a request (most
# of its CPU time on loopback, see README "Performance") is not counted,
# so these ratios are far larger than bench.sh's CPU ratios.  Valgrind
# offers no SHA extensions, so libcrypto's SHA-256 runs its AVX2 code
# here, several times the cost of SHA-NI on a CPU that has them.
#
# Needs valgrind and python3.  INFLUENCERS_MODULE names the .so (default
# build/ngx_http_influencers_module.so); CALLGRIND_KEEP=1 keeps the
# temporary directory (the dumps can be read with callgrind_annotate).
# Only the processes it started are stopped, by PID.

set -euo pipefail

n=${1:-200}
top=${2:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$root/build/ngx_http_influencers_module.so}
dir=$(mktemp -d /tmp/influencers-callgrind.XXXXXX)
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d
gw=18490
be=18491
vgpid=

if [ ! -f "$module" ]; then
    echo "no module at $module (make, or set INFLUENCERS_MODULE)" >&2
    exit 1
fi

cleanup() {
    if [ -n "$vgpid" ]; then
        kill -TERM "$vgpid" 2>/dev/null || true
        wait "$vgpid" 2>/dev/null || true
    fi
    if [ -f "$dir/be.pid" ]; then
        kill -QUIT "$(cat "$dir/be.pid")" 2>/dev/null || true
        sleep 0.3
    fi
    if [ "${CALLGRIND_KEEP:-0}" = 1 ]; then
        echo "kept $dir" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

. "$(dirname "$0")/common.sh"
bench_directory


bench_backend_conf $be

# the gateway of t/bench/bench.sh, in one process.  timer_resolution: the
# cached time is updated 10 times a second, not on every event (under
# valgrind every event is slow enough to see a new millisecond, which made
# the counts vary from run to run), and the worker wakes up for
# callgrind_control even when idle.
cat > "$dir/gw.conf" <<CONF
load_module $module;
daemon off; master_process off;
worker_processes 1; pid $dir/gw.pid; error_log $dir/gw.log warn;
timer_resolution 100ms;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:8m;
  upstream render { server 127.0.0.1:$be; keepalive 64; }
  server { listen 127.0.0.1:$gw; keepalive_requests 100000;
    location /v1/projects/ {
      influencers zone=jobs; influencers_backend /_render;
      influencers_directory $dir/directory.json; }
    location /p1/projects/ { proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /r1/projects/ {
      return 202 '{"jobId":"job_01HXZ9G7KMV2QX8Y1S5RJW3B7T"}'; }
    location = /_render { internal; proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ignore_client_abort on; } } }
CONF

/usr/sbin/nginx -p "$dir" -c "$dir/be.conf"

valgrind -q --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    --dump-instr=no --log-file="$dir/vg.log" \
    /usr/sbin/nginx -p "$dir" -c "$dir/gw.conf" &
vgpid=$!

# the client: one keep-alive connection per case, every answer checked
cat > "$dir/client.py" <<'PY'
import http.client, sys

port, path, n, status, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
idem, body = sys.argv[6], sys.argv[7]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
for i in range(n):
    h = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    if idem:
        h["Idempotency-Key"] = idem.replace("%i", str(i))
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse()
    r.read()
    if r.status != status:
        sys.exit("%s: answered %d, not %d" % (path, r.status, status))
PY

for i in $(seq 1 200); do
    if python3 - "$gw" <<'PY' 2>/dev/null
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
PY
    then
        break
    fi
    sleep 0.1
done

body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'
bad='{"gender":"robot","ageRange":"young_adult","name":"x"}'
other='{"gender":"male","ageRange":"young_adult","prompt":"barista energy"}'
api=/v1/projects/$project/influencers

# name | path | status | api key | Idempotency-Key (%i: the request's
# number) | body.  The floors get requests of the same shape as the
# module's (a path of the same length, the same headers and body), so that
# parsing them costs nginx the same.
floor=/projects/$project/influencers
cases=(
    "return 202 (no module)|/r1$floor|202|$key|cg-floor-%i|$body"
    "proxy_pass (no module)|/p1$floor|202|$key|cg-floor-%i|$body"
    "accept, new key each|$api|202|$key|cg-new-RUN-%i|$body"
    "accept, no key|$api|202|$key||$body"
    "replay|$api|202|$key|cg-replay|$body"
    "401 unknown key|$api|401|wrong|cg-401-%i|$body"
    "422 invalid body|$api|422|$key|cg-bad-%i|$bad"
    "422 key reused|$api|422|$key|cg-replay|$other"
)

send() {     # $1: case, $2: requests, $3: run
    local name path status k idem b
    IFS='|' read -r name path status k idem b <<< "$1"
    python3 "$dir/client.py" "$gw" "$path" "$2" "$status" "$k" \
        "${idem//RUN/$3}" "$b"
}

# warm-up: every case once, and the key that is replayed
for c in "${cases[@]}"; do
    send "$c" 2 warm
done

results=()
i=0
for c in "${cases[@]}"; do
    i=$((i + 1))
    callgrind_control -z "$vgpid" > /dev/null 2>&1
    send "$c" "$n" "run$i"
    callgrind_control -d "case$i" "$vgpid" > /dev/null 2>&1
done

sleep 0.5

printf '\n%-26s %14s %12s\n' case "instr/request" "vs floor"
declare -A per
i=0
for c in "${cases[@]}"; do
    i=$((i + 1))
    name=${c%%|*}
    f=$(grep -l -a "^desc: Trigger: dump case$i\$" "$dir"/cg.out.* \
        2>/dev/null | head -n 1 || true)
    if [ -z "$f" ]; then
        echo "no callgrind dump for \"$name\" (see $dir/vg.log)" >&2
        exit 1
    fi
    total=$(awk '/^summary:/ {print $2} /^totals:/ {print $2}' "$f" | head -n 1)
    per[$i]=$((total / n))
    files[$i]=$f
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }'; }

i=0
for c in "${cases[@]}"; do
    i=$((i + 1))
    name=${c%%|*}
    case $i in
        1|2) against="" ;;
        3|4) against="$(ratio "${per[$i]}" "${per[2]}") of proxy_pass" ;;
        *)   against="$(ratio "${per[$i]}" "${per[1]}") of return" ;;
    esac
    printf '%-26s %14s   %s\n' "$name" "${per[$i]}" "$against"
done

i=0
for c in "${cases[@]}"; do
    i=$((i + 1))
    name=${c%%|*}
    printf '\n== %s: top %d functions by self cost (instr/request)\n' \
        "$name" "$top"
    callgrind_annotate --inclusive=no --threshold=100 "${files[$i]}" \
        2>/dev/null \
    | awk -v n="$n" -v top="$top" '
        /^-+$/ { sep++; next }
        /PROGRAM TOTALS/ { all = $1; next }
        sep >= 3 && $1 ~ /^[0-9,]+$/ && $1 != all {
            ir = $1; gsub(",", "", ir);
            sub(/^ *[0-9,]+ *\( *[0-9.]+%\) */, "");
            lib = "";
            if (match($0, /\[[^]]*\]$/)) {
                lib = substr($0, RSTART + 1, RLENGTH - 2);
                sub(/.*\//, "", lib);
                $0 = substr($0, 1, RSTART - 1);
            }
            sub(/^.*:/, "");
            sub(/ +$/, "");
            obj[lib] += ir;
            if (shown < top) {
                printf "%10d  %s  (%s)\n", ir / n, $0, lib; shown++
            }
        }
        END {
            printf "    by object:";
            for (o in obj) {
                if (o != "" && obj[o] / n >= 100) {
                    printf " %s %d;", o, obj[o] / n
                }
            }
            printf "\n"
        }'
done

if grep -E '\[(alert|crit|emerg)\]' "$dir/gw.log"; then
    echo "errors in the gateway's log" >&2
    exit 1
fi
