#!/usr/bin/env bash
# Latency under a fixed load, on loopback: p50/p99/p99.9 of the module's
# accepted request at a fixed rate beside the proxy_pass floor (a plain
# proxy_pass of the same POST to the same backend), and of a replay beside
# a bare `return 202`.
#
#   bash t/bench/latency.sh [rate] [seconds]
#
# rate (default 2000 requests/s) and seconds (default 30, after 1 s of
# warm-up).  The load is t/bench/pace.c, compiled here: an open-loop
# client that sends request i at start + i/rate on one of its keep-alive
# connections and measures each latency from that scheduled time, so a
# stall in nginx shows as latency instead of as fewer requests
# (coordinated omission, corrected as wrk2 does).  Every run of every case
# is one pace run; the rounds run the cases in turn, each round against a
# freshly started gateway (so every accepted run finds the same, empty
# zone), and the table shows the median over the rounds of each figure
# taken separately.
#
# Environment: INFLUENCERS_MODULE (the .so; build/... by default),
# LATENCY_RUNS (rounds, 3), LATENCY_CONNS (pace's connections, 16),
# LATENCY_CASES (a subset of "plain accept replay return", in that order),
# LATENCY_WARMUP (seconds, 1), LATENCY_SPIN (µs pace polls before each
# send instead of sleeping, 50: the wake-up of an idle CPU, 25 µs or so on
# this VM, would otherwise be in every latency; 0 sleeps, as it costs
# CPU 0 about rate x 50 µs a second), INFLUENCERS_LEAVE=1 keeps the
# temporary directory.
#
# Needs a C compiler, curl and a built module (make).  Starts two nginx
# (a one-worker gateway on 127.0.0.1:18500 and a one-worker backend that
# answers 202 on 127.0.0.1:18501), both on CPU 1, pace on CPU 0 (taskset),
# and stops them by PID at exit.  Exit status 1 if the accepted case got
# anything but 202, or the gateway logged an [alert]/[crit]/[emerg].

set -euo pipefail

rate=${1:-2000}
secs=${2:-30}
runs=${LATENCY_RUNS:-3}
conns=${LATENCY_CONNS:-16}
cases=${LATENCY_CASES:-plain accept replay return}
warm=${LATENCY_WARMUP:-1}
spin=${LATENCY_SPIN:-50}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
gport=18500
bport=18501
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d
path=/v1/projects/$project/influencers
body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'

[ -f "$module" ] || { echo "no module at $module (make, or INFLUENCERS_MODULE)" >&2; exit 2; }
for p in $gport $bport; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "127.0.0.1:$p is in use (another latency.sh?)" >&2
        exit 2
    fi
done

dir=$(mktemp -d /tmp/influencers-latency.XXXXXX)
pacepid=

stop_nginx() {   # $1: pid file
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill -QUIT "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

cleanup() {
    [ -n "$pacepid" ] && kill -TERM "$pacepid" 2>/dev/null || true
    stop_nginx "$dir/gw.pid"
    stop_nginx "$dir/be.pid"
    if [ -n "${INFLUENCERS_LEAVE:-}" ]; then
        echo "kept $dir" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -Wextra -Werror -o "$dir/pace" "$top/t/bench/pace.c"

. "$(dirname "$0")/common.sh"
bench_directory

# The zone holds every job of one round's accepted run (a job and its
# idempotency entry each: two records of 332 bytes), with room to spare;
# org_share=100% as the bench has a single org.
zone_mb=$(awk -v r="$rate" -v s="$secs" -v w="$warm" 'BEGIN {
    m = int(r * (s + w + 1) * 2 * 332 * 1.25 / 1048576) + 8;
    print (m < 64) ? 64 : m }')


bench_backend_conf $bport

cat > "$dir/gw.conf" <<CONF
load_module $module;
worker_processes 1; pid $dir/gw.pid; error_log $dir/gw.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:${zone_mb}m org_share=100%;
  upstream render { server 127.0.0.1:$bport; keepalive 64; }
  server { listen 127.0.0.1:$gport; keepalive_requests 1000000;
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

# The request every case sends: headers, an empty line, the body.
printf 'Content-Type: application/json\r\nAuthorization: Bearer %s\r\n\r\n%s' \
    "$key" "$body" > "$dir/request"

wait_port() {    # $1: port
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

start_gateway() {
    stop_nginx "$dir/gw.pid"
    taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/gw.conf"
    wait_port $gport
}

taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"
wait_port $bport

one() {          # $1: case, $2: round; appends pace's summary to $dir/$1
    local url extra=()
    case $1 in
    plain)  url=/plain/x ;;
    accept) url=$path; extra=(-k Idempotency-Key -K "lat-$$-$2-") ;;
    replay) url=$path; extra=(-H "Idempotency-Key: lat-replay-$$") ;;
    return) url=/return/x ;;
    esac
    taskset -c 0 "$dir/pace" -q -w "$warm" -S "$spin" -f "$dir/request" "${extra[@]}" \
        "$rate" "$secs" "$conns" "127.0.0.1:$gport" "$url" \
        > "$dir/pace.out" &
    pacepid=$!
    wait "$pacepid" || { echo "pace failed ($1, round $2)" >&2; exit 1; }
    pacepid=
    grep '^summary ' "$dir/pace.out" >> "$dir/$1"
    printf '  round %s %-7s %s\n' "$2" "$1" \
        "$(sed 's/^summary //; s/ sent=[^ ]*//; s/ p90=[^ ]*//; s/ warmup_non2xx=0//; s/ lag50=[^ ]*//; s/ svc50=[^ ]*//' "$dir/pace.out")"
}

echo "latency at $rate req/s, $secs s (+$warm s warm-up) a run, $conns connections," \
     "$runs rounds; zone ${zone_mb}m; latencies in µs;" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$runs"); do
    start_gateway
    for c in $cases; do
        if [ "$c" = replay ]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
                -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
                -H "Idempotency-Key: lat-replay-$$" -d "$body" \
                "http://127.0.0.1:$gport$path")
            [ "$code" = 202 ] || { echo "replay key: $code, not 202" >&2; exit 1; }
        fi
        one "$c" "$r"
    done
done

# median over the rounds of one field of a case's summaries
med() {          # $1: case, $2: field
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$dir/$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-";
              else if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# requests of a case (all rounds, warm-ups included) not answered 202
# (a warm-up's non-2xx only), and its errors
bad() {          # $1: case
    awk '{ for (i = 1; i <= NF; i++) {
             if ($i ~ /^errors=/) { sub(/^errors=/, "", $i); e += $i }
             if ($i ~ /^warmup_non2xx=/) { sub(/^warmup_non2xx=/, "", $i); o += $i }
             if ($i ~ /^statuses=/) { s = $i; sub(/^statuses=/, "", s);
               n = split(s, kv, ",");
               for (j = 1; j <= n; j++) { split(kv[j], p, ":");
                 if (p[1] != "202") o += p[2] } } } }
         END { printf "%d %d\n", o, e }' "$dir/$1"
}
name() {
    case $1 in
    plain)  echo "proxy_pass (no module, the floor)" ;;
    accept) echo "module: accepted, forwarded" ;;
    replay) echo "module: replay of one key" ;;
    return) echo "return 202 (no module)" ;;
    esac
}
ms() { awk -v u="$1" 'BEGIN { if (u == "-") print "-"; else printf "%.3f", u / 1000 }'; }

echo
echo "median of $runs runs at $rate req/s (ms; non-202 and errors summed over the runs)"
printf '%-34s %9s %8s %8s %8s %8s %9s %7s %6s %8s\n' case req/s p50 p99 p99.9 max \
    "p99-floor" non-202 errors "lag p99"
status=0
for c in $cases; do
    read -r non errs < <(bad "$c")
    delta=-
    if [ "$c" = accept ] && [ -s "$dir/plain" ]; then
        delta=$(awk -v a="$(med accept p99)" -v p="$(med plain p99)" \
            'BEGIN { printf "%+.3f", (a - p) / 1000 }')
    fi
    if [ "$c" = replay ] && [ -s "$dir/return" ]; then
        delta=$(awk -v a="$(med replay p99)" -v p="$(med return p99)" \
            'BEGIN { printf "(%+.3f)", (a - p) / 1000 }')
    fi
    printf '%-34s %9s %8s %8s %8s %8s %9s %7s %6s %8s\n' "$(name "$c")" \
        "$(med "$c" rate)" "$(ms "$(med "$c" p50)")" "$(ms "$(med "$c" p99)")" \
        "$(ms "$(med "$c" p999)")" "$(ms "$(med "$c" max)")" "$delta" "$non" "$errs" \
        "$(ms "$(med "$c" lag99)")"
    if [ "$c" = accept ] && [ "$non" != 0 ]; then
        echo "the accepted case got $non answers other than 202:" \
             "$(sed -n 's/.*statuses=//p' "$dir/accept" | paste -sd' ')" >&2
        status=1
    fi
done
for c in $cases; do
    awk -v c="$(name "$c")" '{ for (i = 1; i <= NF; i++) if ($i ~ /^unsent=/) {
             sub(/^unsent=/, "", $i); u += $i }
             if (match($0, / svc99=[0-9]+/)) v = v " " substr($0, RSTART + 7, RLENGTH - 7) / 1000 }
         END { if (u) printf "%s: %d requests never sent (no idle connection" \
               " until 5 s after the schedule), in the percentiles at their wait;" \
               " uncorrected p99 (written to answered) of each run, ms:%s\n", c, u, v }' \
        "$dir/$c"
done
if [ -s "$dir/plain" ] && [ -s "$dir/accept" ]; then
    # pace's own lateness is inside every latency: when it is large, the
    # machine was busy and the difference of two p99 says little
    awk -v a="$(med accept p99)" -v p="$(med plain p99)" \
        -v la="$(med accept lag99)" -v lp="$(med plain lag99)" 'BEGIN {
        d = (a - p) / 1000; l = (la > lp ? la : lp) / 1000;
        printf "accepted p99 - proxy_pass p99 = %+.3f ms: %s the 0.1 ms target%s\n",
            d, (d <= 0.1) ? "within" : "NOT within",
            (l > 0.1) ? sprintf(" (inconclusive: pace itself ran up to %.3f ms" \
                " late at p99, the machine was busy)", l) : "" }'
fi
echo "(replay's p99-floor is against return 202; the p99.9 of a run is set by its slowest" \
     "$(awk -v r="$rate" -v s="$secs" 'BEGIN { printf "%d", r * s / 1000 }') requests;" \
     "lag p99: how late pace itself saw its requests due (a late timer, pace" \
     "off its CPU), which is inside the latencies)"

if grep -E '\[(alert|crit|emerg)\]' "$dir/gw.log"; then
    echo "errors in the gateway's log" >&2
    status=1
fi
exit $status
