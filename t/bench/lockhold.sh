#!/usr/bin/env bash
# The longest hold of the zone's lock, seen from outside: nginx starts with
# a large zone already full of unexpired idempotency entries (read from a
# state file written by lockhold.pl), a few of them expiring during the run
# at random places in the zone's queue; then wrk sends new keys, which the
# full zone refuses (503) or, where an expired entry was found, accepts
# (202).  Whatever a claim does under the shared mutex shows as the latency
# of that request and of the requests waiting for the mutex on the other
# worker: the max and p99 latency are the lock hold's upper bound.
#
#   bash t/bench/lockhold.sh [-z 1g] [-d 20] [-c 16] [-p 2] [-e 0.01] [-o 1] [-q 0]
#                            label=module.so ...
#
#   e.g. (before: the committed HEAD; after: the working tree)
#   mkdir -p /tmp/lh/base && git archive HEAD | tar -x -C /tmp/lh/base
#   make -C /tmp/lh/base BUILD=/tmp/lh/base/build && make
#   bash t/bench/lockhold.sh before=/tmp/lh/base/build/ngx_http_influencers_module.so \
#                            after=build/ngx_http_influencers_module.so
#
# -z zone size, -d seconds of wrk per module, -c connections, -p the pause
# in ms between two requests of a connection (0: as fast as possible; with
# a pause the CPUs stay partly idle, so that a slow answer is a wait for
# the lock rather than for a CPU), -e fraction of the entries that expire
# during the first two minutes (at random places in the queue), -o the
# entries are held by that many orgs (v3 only; 1: all by the bench's org),
# -q GET the stats location every that many seconds during the run and
# report its slowest answer (0: never).
#
# A module that knows org_share gets org_share=100% (no share: only the
# zone's lock is measured) and the v3 state file; one that does not, the
# v2 file.  Two
# workers (listen ... reuseport), wrk with two threads, on loopback; the
# backend is a `return 202` server of the same nginx.  Run by hand, not in
# CI: it needs wrk (apt-get install wrk), about 1.5 GB of RAM and of /tmp
# for -z 1g, and a minute or two.  Everything it starts is stopped by PID
# and its temp dir removed at exit.  Prints a markdown table.

set -euo pipefail

zone=1g
secs=20
conns=16
pause=2
expiring=0.01
orgs=1
poll=0

while getopts 'z:d:c:p:e:o:q:' opt; do
    case $opt in
        z) zone=$OPTARG ;;
        d) secs=$OPTARG ;;
        c) conns=$OPTARG ;;
        p) pause=$OPTARG ;;
        e) expiring=$OPTARG ;;
        o) orgs=$OPTARG ;;
        q) poll=$OPTARG ;;
        *) sed -n '2,37p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

if [ $# -eq 0 ]; then
    sed -n '2,37p' "$0" >&2
    exit 2
fi

command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
nginx=${INFLUENCERS_NGINX:-/usr/sbin/nginx}

case $zone in
    *[gG]) zone_bytes=$(( ${zone%[gG]} * 1024 * 1024 * 1024 )) ;;
    *[mM]) zone_bytes=$(( ${zone%[mM]} * 1024 * 1024 )) ;;
    *[kK]) zone_bytes=$(( ${zone%[kK]} * 1024 )) ;;
    *)     zone_bytes=$zone ;;
esac
# nginx's sizes know k and m, not g
if (( zone_bytes % (1024 * 1024) == 0 )); then
    zone_conf=$(( zone_bytes / 1024 / 1024 ))m
else
    zone_conf=$(( zone_bytes / 1024 ))k
fi
# more entries than either layout holds (a record takes at least 512 bytes
# of slab): those that expired before the start are made up for
count=$(( zone_bytes / 512 * 102 / 100 ))

dir=$(mktemp -d /tmp/inf-lockhold.XXXXXX)
chmod 755 "$dir"
master=
poller=

stop_nginx() {
    [ -n "$master" ] || return 0
    local workers i
    workers=$(pgrep -P "$master" || true)
    # the state file is not worth saving: its directory goes, the save fails
    rm -rf "$dir/state"
    kill -QUIT "$master" 2>/dev/null || true
    for i in $(seq 1 300); do
        kill -0 "$master" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$master" 2>/dev/null; then
        kill -KILL "$master" $workers 2>/dev/null || true
    fi
    wait "$master" 2>/dev/null || true
    master=
}

cleanup() {
    [ -z "$poller" ] || kill "$poller" 2>/dev/null || true
    stop_nginx
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr =>
        "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1)->sockport'
}
gw=$(free_port)
be=$(free_port)
while [ "$be" = "$gw" ]; do be=$(free_port); done

key=sk_lockhold_$$
org=org_bench
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d
digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
cat > "$dir/directory.json" <<JSON
{"keys": [{"sha256": "$digest", "org": "$org",
           "scopes": ["influencers:write"]}],
 "projects": [{"id": "$project", "org": "$org",
               "targetGender": "female"}]}
JSON

{ printf 'KEY = "%s"\nRUN = "%s"\nPAUSE = %d\n' "$key" "$$" "$pause"; cat <<'LUA'; } > "$dir/lockhold.lua"
-- new keys only; counts the answers per status; prints one RESULT line
c202, c503, cother, n = 0, 0, 0, 0
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function request()
    n = n + 1
    return wrk.format("POST", nil, {
        ["Authorization"] = "Bearer " .. KEY,
        ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = "lh-" .. RUN .. "-" .. tid .. "-" .. n,
    }, '{"gender":"female","ageRange":"young_adult","prompt":"lock hold"}')
end

if PAUSE > 0 then
    function delay() return PAUSE end
end

function response(status, headers, body)
    if status == 202 then c202 = c202 + 1
    elseif status == 503 then c503 = c503 + 1
    else cother = cother + 1 end
end

function done(summary, latency, requests)
    local a, b, c = 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("c202"); b = b + t:get("c503"); c = c + t:get("cother")
    end
    local e = summary.errors
    io.write(string.format("RESULT %d %d %d %d %d %.2f %.2f %.2f %.2f %.1f\n",
        summary.requests, a, b, c,
        e.connect + e.read + e.write + e.timeout,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency:percentile(99.9) / 1000, latency.max / 1000,
        summary.duration / 1e6))
end
LUA

conf() {    # $1 module, $2 zone size, $3 extra zone parameters
    cat <<CONF
load_module $1;
worker_processes 2;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log notice;
worker_rlimit_nofile 4096;
events { worker_connections 2048; }
http {
    access_log off;
    client_body_temp_path $dir/b; proxy_temp_path $dir/p;
    fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
    influencers_zone zone=jobs:$2 $3;
    upstream render { server 127.0.0.1:$be; keepalive 64; }
    server {
        listen 127.0.0.1:$gw reuseport;
        keepalive_requests 1000000;
        location /v1/projects/ {
            influencers zone=jobs;
            influencers_backend /_render;
            influencers_directory $dir/directory.json;
        }
        location = /_render {
            internal;
            proxy_pass http://render/jobs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
        }
        location = /_stats { influencers_stats zone=jobs; }
    }
    server {
        listen 127.0.0.1:$be;
        keepalive_requests 1000000;
        location / { default_type application/json; return 202 '{"accepted":true}'; }
    }
}
CONF
}

stats() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0],
                                      Timeout => 2) or exit 1;
        print $s "GET /_stats HTTP/1.0\r\nHost: localhost\r\n\r\n";
        local $/; my $r = <$s> // ""; exit 1 unless $r =~ m{^HTTP/1\.\d 200};
        $r =~ s/^.*?\r\n\r\n//s; print $r, "\n";' "$gw"
}

# microseconds from connect to the whole answer of the stats location
stats_us() {
    perl -MTime::HiRes=time -MIO::Socket::INET -e '
        my $t = time;
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0],
                                      Timeout => 2) or exit 1;
        print $s "GET /_stats HTTP/1.0\r\nHost: localhost\r\n\r\n";
        local $/; my $r = <$s> // ""; exit 1 unless $r =~ m{^HTTP/1\.\d 200};
        printf "%d\n", (time - $t) * 1e6;' "$gw"
}

field() { perl -ne 'print $1 if /"'"$1"'":(\d+)/'; }

rows=()

for arg in "$@"; do
    label=${arg%%=*}
    module=${arg#*=}
    [ "$label" != "$arg" ] || label=$(basename "$(dirname "$module")")
    [ -f "$module" ] || { echo "no module $module" >&2; exit 1; }
    module=$(cd "$(dirname "$module")" && pwd)/$(basename "$module")

    # does it know org_share (and so the v3 state file)?
    conf "$module" 32k "org_share=100%" > "$dir/probe.conf"
    if "$nginx" -t -q -p "$dir" -c "$dir/probe.conf" 2> "$dir/probe.err"; then
        format=v3 share="org_share=100%"
    else
        conf "$module" 32k "" > "$dir/probe.conf"
        if ! "$nginx" -t -q -p "$dir" -c "$dir/probe.conf" 2> "$dir/probe.err"; then
            echo "$label: nginx -t fails:" >&2
            cat "$dir/probe.err" >&2
            exit 1
        fi
        format=v2 share=
    fi

    mkdir -p "$dir/state"
    rm -f "$dir/error.log"
    t0=$(date +%s.%N)
    read -r written early < <(perl "$here/lockhold.pl" --format $format \
        --count "$count" --org "$org" --orgs "$orgs" --expiring "$expiring" \
        --from 0 --span 120 --out "$dir/state/jobs.state")
    conf "$module" "$zone_conf" "ttl=24h lease=10s state=$dir/state/jobs.state $share" \
        > "$dir/nginx.conf"
    "$nginx" -p "$dir" -c "$dir/nginx.conf" 2>> "$dir/stderr.log" &
    master=$!

    up=
    for i in $(seq 1 1800); do
        if s=$(stats 2> /dev/null); then up=1; break; fi
        kill -0 "$master" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$up" ]; then
        echo "$label: nginx did not come up" >&2
        tail -n 20 "$dir/error.log" "$dir/stderr.log" >&2 || true
        exit 1
    fi
    t1=$(date +%s.%N)
    rm -f "$dir/state/jobs.state"

    records=$(field records <<< "$s")
    keyed=$(field keyed <<< "$s")
    echo "$label: $format state file, $written entries ($early expiring early)," \
         "$(o=$(field orgs <<< "$s"); echo "${o:-(no org count)}") orgs," \
         "zone $zone: $records records, $keyed loaded" \
         "(generated and started in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s)" >&2

    poller=
    : > "$dir/poll.ms"
    if [ "$poll" != 0 ]; then
        # bounded: as many polls as fit in the run
        ( for i in $(seq 1 "$(awk -v d="$secs" -v q="$poll" 'BEGIN{print int(d/q) - 1}')"); do
              sleep "$poll"
              stats_us >> "$dir/poll.ms" || true
          done ) &
        poller=$!
    fi
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --timeout 30s -s "$dir/lockhold.lua" \
              "http://127.0.0.1:$gw/v1/projects/$project/influencers")
    [ -z "$poller" ] || wait "$poller" || true
    poller=
    statsmax=$(sort -n "$dir/poll.ms" | tail -n 1 | awk '{ if ($1 != "") printf "%.1f", $1 / 1000 }')
    [ -z "$statsmax" ] || echo "$label: slowest of $(wc -l < "$dir/poll.ms") stats answers: $statsmax ms" >&2
    read -r _ reqs n202 n503 nother nerr p50 p99 p999 max dur \
        < <(grep '^RESULT' <<< "$out")
    s2=$(stats || true)
    echo "$label: $reqs requests in ${dur}s: 202 $n202, 503 $n503, other $nother," \
         "socket errors $nerr; p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms," \
         "max $max ms; capacityRejections $(field capacityRejections <<< "$s2")" >&2

    rows+=("| $label | $zone | $records | $keyed | $reqs | $(awk -v r="$reqs" -v d="$dur" 'BEGIN{printf "%d", r/d}') | $n202 | $n503 | $p50 | $p99 | $p999 | $max |")

    stop_nginx
done

echo
echo "| build | zone | records | loaded | requests | req/s | 202 | 503 | p50 ms | p99 ms | p99.9 ms | max ms |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
