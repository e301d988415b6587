#!/usr/bin/env bash
# What each Redis topology of fleet mode costs, in one run, on loopback:
#
#   plain    a single primary over plaintext (fleet mode as it was)
#   tls      a single primary over TLS (ssl=on, the certificate verified
#            against a CA of the run's own, its IP SAN checked)
#   cluster  a Redis Cluster of 3 primaries (cluster=, no replicas)
#   wait0    a primary with one replica, wait=0 (the replica's own cost)
#   wait1    the same primary and replica, wait=1 (WAIT after every claim
#            and every finish)
#
#   bash t/bench/redis-topologies.sh [seconds] [connections]
#
# seconds (5) is each wrk run, connections (32) wrk's.  Every topology
# gets two gateways (one worker each): node A (a 64m zone) takes the
# accepts, node B (a 32k zone, the least: about 80 records, so that it
# cannot keep what it replays) replays keys node A accepted, from Redis.
# Each topology is measured in three modes:
#
#   accept         a new Idempotency-Key every request, on node A
#   replay A       the keys just accepted, again, on node A (its zone
#                  replays them: no round trip to Redis)
#   replay B       the same keys on node B: each one read from Redis
#                  (node B's zone is too small to keep them between turns)
#
# For each, a wrk run (-t1, $connections connections, as fast as it goes)
# gives: requests per second and non-2xx answers; the gateway's CPU per
# request (utime + stime of its master and worker from /proc/<pid>/stat,
# before and after the run, over wrk's request count); Redis commands per
# request from INFO commandstats of every server of the topology (replicas
# included), before and after, INFO itself left out: "sent" counts what
# the gateway sent (EVALSHA, WAIT, CLUSTER ..., the round trips), "all"
# every command Redis counted, as total_commands_processed does (with the
# GET/SET/TIME a script runs and what a replica applies and acknowledges),
# with the breakdown by command; Redis's CPU per request (/proc, every
# server of the topology); and how busy CPU 1 was with other work (its
# user, system and steal time in /proc/stat less the gateway's, the
# backend's and Redis's, in % of the run: the machine may not be ours
# alone).  Then a t/bench/pace.c run of the same mode at a fixed rate
# (open loop, coordinated omission corrected) gives the median and p99 latency (the
# latency cost of TLS, of a cluster, of WAIT), and pace's own lateness at
# p99, which is inside them (large: the machine was busy, the latencies
# say little).
#
# Environment: INFLUENCERS_MODULE (the .so: build/... by default; copy it
# to a name of its own for a long run), RT_RATE (pace's rate, 1000/s),
# RT_LAT_SECS (pace's measured seconds, 2, after RT_WARM 0.5 s of
# warm-up), RT_CASES (a subset of "plain tls cluster wait0 wait1"),
# RT_BASE_PORT (18540: the gateways on RT_BASE_PORT.. +9, the backend on
# +10), INFLUENCERS_LEAVE=1 keeps the temp dirs (the gateways' logs and
# pace's outputs; the Redis nodes' dirs, named on stderr).
#
# Needs wrk (apt-get install wrk), redis-server and redis-cli with TLS
# (redis-server, redis-tools), openssl, perl, a C compiler, curl and a
# built module (make).  wrk and pace run on CPU 0; nginx (gateways and the
# backend stand-in) and every redis-server on CPU 1, so that requests per
# second are what one core serves, Redis included (a replica shares that
# core with its primary: wait=1's cost here includes the replica's turn on
# the CPU).  The Redis topologies are started by t/bench/redis-topologies.pl
# (t/lib/RedisTopo.pm: AOF appendfsync everysec, noeviction, as fleet mode
# wants Redis); everything this script starts is stopped by PID at exit
# and its temp dirs removed.  About two and a half minutes with the
# defaults.
#
# Exit status 1 when a gateway logged an [error] or worse, or a mode that
# must be 202 got anything else; the table is printed anyway.

set -euo pipefail

secs=${1:-5}
conns=${2:-32}
rate=${RT_RATE:-1000}
lat_secs=${RT_LAT_SECS:-2}
warm=${RT_WARM:-0.5}
cases=${RT_CASES:-plain tls cluster wait0 wait1}
base=${RT_BASE_PORT:-18540}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
key=bench-key-$$
project=3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d
path=/v1/projects/$project/influencers
body='{"gender":"female","ageRange":"young_adult","prompt":"barista energy"}'
p_backend=$((base + 10))

for tool in wrk redis-cli curl cc perl openssl taskset; do
    command -v "$tool" > /dev/null || { echo "redis-topologies.sh: needs $tool" >&2; exit 2; }
done
[ -f "$module" ] || { echo "redis-topologies.sh: no module at $module (make)" >&2; exit 2; }
for p in $(seq "$base" "$p_backend"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "redis-topologies.sh: 127.0.0.1:$p is in use (RT_BASE_PORT)" >&2
        exit 2
    fi
done

dir=$(mktemp -d /tmp/influencers-rt-bench.XXXXXX)
chmod 0755 "$dir"
topo_pid=
load_pid=
started=$(date +%s)

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

running() {        # $1: pid: runs, and is not a zombie
    [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}

stop_topo() {      # the helper stops its Redis servers and says so
    [ -n "$topo_pid" ] || return 0
    if running "$topo_pid"; then
        kill -TERM "$topo_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            running "$topo_pid" || break
            sleep 0.1
        done
        # its watchdog stops its Redis if it has to be killed
        if running "$topo_pid"; then kill -KILL "$topo_pid" 2>/dev/null || true; fi
    fi
    wait "$topo_pid" 2>/dev/null || true
    topo_pid=
}

cleanup() {
    set +e
    [ -n "$load_pid" ] && kill -TERM "$load_pid" 2>/dev/null
    for f in "$dir"/*.pid; do
        [ -f "$f" ] && stop_nginx "$f"
    done
    stop_topo
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
bench_backend_conf $p_backend

# ---------------------------------------------------------------- Redis

echo "redis-topologies.sh: starting the Redis topologies..." >&2
taskset -c 1 perl "$top/t/bench/redis-topologies.pl" "$dir/topo.env" $$ \
    2> "$dir/topo.log" &
topo_pid=$!
for _ in $(seq 1 900); do
    [ -f "$dir/topo.env" ] && break
    kill -0 "$topo_pid" 2>/dev/null || break
    sleep 0.1
done
if [ ! -f "$dir/topo.env" ]; then
    echo "redis-topologies.sh: the Redis topologies did not start:" >&2
    cat "$dir/topo.log" >&2
    exit 1
fi
. "$dir/topo.env"
sed 's/^/  /' "$dir/topo.log" >&2

# ------------------------------------------------------------- gateways

# per case: the influencers_redis parameters, the INFO ports, the pids
case_redis() {
    case $1 in
    plain)   echo "127.0.0.1:$plain_port" ;;
    tls)     echo "127.0.0.1:$tls_port ssl=on ssl_trusted_certificate=$tls_ca" ;;
    cluster) echo "cluster=$cluster_seeds" ;;
    wait0)   echo "127.0.0.1:$repl_port" ;;
    wait1)   echo "127.0.0.1:$repl_port wait=1" ;;
    esac
}
case_info() {
    case $1 in
    plain) echo "$plain_info" ;; tls) echo "$tls_info" ;;
    cluster) echo "$cluster_info" ;; wait0|wait1) echo "$repl_info" ;;
    esac
}
case_pids() {
    case $1 in
    plain) echo "$plain_pids" ;; tls) echo "$tls_pids" ;;
    cluster) echo "$cluster_pids" ;; wait0|wait1) echo "$repl_pids" ;;
    esac
}
case_name() {
    case $1 in
    plain)   echo "plaintext, 1 primary" ;;
    tls)     echo "TLS (verified), 1 primary" ;;
    cluster) echo "cluster, 3 primaries" ;;
    wait0)   echo "primary + replica, wait=0" ;;
    wait1)   echo "primary + replica, wait=1" ;;
    esac
}

gateway_conf() {   # $1: name, $2: port, $3: zone size, $4: redis parameters
    cat > "$dir/$1.conf" <<CONF
load_module $module;
worker_processes 1; pid $dir/$1.pid; error_log $dir/$1.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:$3 org_share=100%;
  influencers_redis zone=jobs $4;
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

wait_port() {      # $1: port
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "redis-topologies.sh: nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/be.conf"
wait_port $p_backend

declare -A port_a port_b
i=0
for c in $cases; do
    port_a[$c]=$((base + 2 * i))
    port_b[$c]=$((base + 2 * i + 1))
    i=$((i + 1))
    gateway_conf "$c-a" "${port_a[$c]}" 64m "$(case_redis "$c")"
    gateway_conf "$c-b" "${port_b[$c]}" 32k "$(case_redis "$c")"
    for n in a b; do
        /usr/sbin/nginx -t -q -p "$dir" -c "$dir/$c-$n.conf" 2>> "$dir/nginx-t.log" || {
            echo "redis-topologies.sh: nginx -t refused $c-$n.conf:" >&2
            cat "$dir/nginx-t.log" >&2
            exit 1
        }
        taskset -c 1 /usr/sbin/nginx -p "$dir" -c "$dir/$c-$n.conf"
    done
done
for c in $cases; do wait_port "${port_a[$c]}"; wait_port "${port_b[$c]}"; done

# ------------------------------------------------------------- measures

tck=$(getconf CLK_TCK)

post() {           # $1: port, $2: Idempotency-Key: the status
    curl -s -o /dev/null -w '%{http_code}' -X POST --max-time 5 \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: $2" -d "$body" "http://127.0.0.1:$1$path" || true
}

ticks() {          # $@: pids: their utime + stime, in clock ticks
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}

gw_pids() {        # $1: gateway name: its master and workers
    local m
    m=$(cat "$dir/$1.pid")
    echo "$m" $(pgrep -P "$m" || true)
}

# every command's calls on the servers of a case, summed: "name calls" lines
cmdstats() {       # $1: case
    local p
    for p in $(case_info "$1"); do
        redis-cli -h 127.0.0.1 -p "$p" info commandstats
    done | tr -d '\r' | awk -F'[_:=,]' '/^cmdstat_/ {
            name = $0; sub(/^cmdstat_/, "", name); sub(/:.*/, "", name);
            match($0, /calls=[0-9]+/);
            c[name] += substr($0, RSTART + 6, RLENGTH - 6) }
        END { for (n in c) print n, c[n] }' | sort
}

# the difference of two cmdstats outputs over n requests:
# "all|sent|breakdown": every command (those a script runs and those a
# replica applies included: what total_commands_processed counts), the
# commands the gateway sent (what is not run inside a script or by
# replication), and each command's calls per request
cmd_delta() {      # $1: before file, $2: after file, $3: requests
    awk -v n="$3" 'FNR == NR { b[$1] = $2; next }
        { d = $2 - b[$1]; if ($1 == "info" || d <= 0) next;
          t += d;
          if ($1 ~ /^(evalsha|eval|evalsha_ro|eval_ro|script\|.*|wait|cluster\|.*|asking|auth|hello|select|role|readonly)$/) g += d;
          if (d / n >= 0.005) s = s sprintf("%s%s %.2f", s == "" ? "" : ", ", $1, d / n) }
        END { printf "%.3f|%.3f|%s\n", (n > 0) ? t / n : 0, (n > 0) ? g / n : 0,
                     (s == "") ? "none" : s }' "$1" "$2"
}

# CPU 1's ticks: "busy total", busy being user, nice, system and steal
# (irq and softirq left out: the loopback's packets of our own requests
# are handled there, charged to no process)
cpu1() {
    awk '$1 == "cpu1" { t = 0; for (i = 2; i <= 9; i++) t += $i;
                        print $2 + $3 + $4 + $9, t }' /proc/stat
}

# wrk Lua: accept (new keys "rt-TAG-n"), or replay of keys 1..M of a tag
wrk_script() {     # $1: accept | replay, $2: tag, $3: M
    cat > "$dir/wrk.lua" <<LUA
local n, m, tag = 0, $3, "$2"
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
request = function()
    if "$1" == "accept" then n = n + 1 else n = n % m + 1 end
    wrk.headers["Idempotency-Key"] = "rt-" .. tag .. "-" .. n
    return wrk.format()
end
LUA
}

# one wrk run against gateway $2 of case $1, mode $3 (tag $4, keys $5):
# prints "rps|total|non2xx|gw_us|all_cmds|sent_cmds|redis_us|other%|breakdown"
# (other%: CPU 1's busy time that was not the gateway's, the backend's or
# Redis's, in % of the run: other work on the machine, or the hypervisor's)
wrk_run() {
    local c=$1 gw=$2 mode=$3 tag=$4 m=$5 port gwp rp bp g0 g1 r0 r1 b0 b1 total rps non2xx cd
    local c0 c1
    [ "${gw#*-}" = a ] && port=${port_a[$c]} || port=${port_b[$c]}
    gwp=$(gw_pids "$gw")
    rp=$(case_pids "$c")
    bp=$(gw_pids be)
    wrk_script "$mode" "$tag" "$m"
    cmdstats "$c" > "$dir/cs0"
    g0=$(ticks $gwp); r0=$(ticks $rp); b0=$(ticks $bp); c0=$(cpu1)
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$dir/wrk.lua" \
        "http://127.0.0.1:$port$path" > "$dir/wrk.out" &
    load_pid=$!
    wait "$load_pid" || { echo "wrk failed ($c $gw $mode)" >&2; cat "$dir/wrk.out" >&2; }
    load_pid=
    g1=$(ticks $gwp); r1=$(ticks $rp); b1=$(ticks $bp); c1=$(cpu1)
    cmdstats "$c" > "$dir/cs1"
    total=$(awk '/requests in/ { print $1 }' "$dir/wrk.out")
    rps=$(awk '/Requests\/sec/ { print $2 }' "$dir/wrk.out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$dir/wrk.out")
    total=${total:-0}
    cd=$(cmd_delta "$dir/cs0" "$dir/cs1" "$total")
    awk -v r="${rps:-0}" -v t="$total" -v n="${non2xx:-0}" -v g=$((g1 - g0)) \
        -v rt=$((r1 - r0)) -v bt=$((b1 - b0)) -v hz="$tck" -v cd="$cd" \
        -v c0="$c0" -v c1="$c1" 'BEGIN {
        split(cd, x, "|"); split(c0, u, " "); split(c1, v, " ");
        busy = v[1] - u[1]; all = v[2] - u[2];
        o = (all > 0) ? (busy - g - rt - bt) * 100 / all : 0;
        printf "%.0f|%d|%d|%.1f|%s|%s|%.1f|%.0f|%s\n", r, t, n,
            (t > 0) ? g / hz * 1e6 / t : 0, x[1], x[2],
            (t > 0) ? rt / hz * 1e6 / t : 0, (o > 0) ? o : 0, x[3] }'
}

# one pace run against gateway $2 of case $1 with keys PREFIX<i>:
# prints "p50_ms|p99_ms|non2xx+errors|lag99_ms|statuses" (lag: how late pace
# itself saw its requests due, which is inside every latency: when it is
# large, the machine was busy and the latencies say little)
pace_run() {       # $1: case, $2: gateway name, $3: key prefix, $4: mode
    local c=$1 gw=$2 port out=$dir/pace.$1.$2.$4.out
    [ "${gw#*-}" = a ] && port=${port_a[$c]} || port=${port_b[$c]}
    taskset -c 0 "$dir/pace" -q -w "$warm" -S 50 -k Idempotency-Key -K "$3" \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
        -b "$body" "$rate" "$lat_secs" 16 "127.0.0.1:$port" "$path" \
        > "$out" &
    load_pid=$!
    wait "$load_pid" || { echo "pace failed ($c $gw)" >&2; cat "$out" >&2; }
    load_pid=
    awk '/^summary / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "%.3f|%.3f|%d|%.3f|%s\n", v["p50"] / 1000, v["p99"] / 1000,
               v["non2xx"] + v["errors"] + v["warmup_non2xx"], v["lag99"] / 1000,
               v["statuses"] }' \
        "$out"
}

status=0
echo "redis-topologies.sh: wrk ${secs}s x $conns connections per mode; pace $rate req/s," \
     "${lat_secs}s (+${warm}s warm-up), 16 connections; wrk/pace on CPU 0, nginx and Redis" \
     "on CPU 1; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
: > "$dir/rows"
for c in $cases; do
    tag="$c-$$-$(date +%s)"
    for n in a b; do   # connections to Redis made (TLS handshake, slot map)
        port=${port_a[$c]}; [ $n = b ] && port=${port_b[$c]}
        s=$(post "$port" "warm-$tag-$n")
        [ "$s" = 202 ] || { echo "$c-$n: a first keyed request got $s, not 202" >&2; status=1; }
    done
    echo "  $c: accept..." >&2
    acc=$(wrk_run "$c" "$c-a" accept "$tag" 0)
    total=$(echo "$acc" | cut -d'|' -f2)
    m=$((total - 2 * conns)); [ "$m" -gt 0 ] || m=1
    echo "  $c: replay on node A, then on node B ($m keys)..." >&2
    repa=$(wrk_run "$c" "$c-a" replay "$tag" "$m")
    repb=$(wrk_run "$c" "$c-b" replay "$tag" "$m")
    echo "  $c: latency (pace)..." >&2
    lacc=$(pace_run "$c" "$c-a" "lat-$tag-" accept)
    lrepa=$(pace_run "$c" "$c-a" "lat-$tag-" replay)
    lrepb=$(pace_run "$c" "$c-b" "lat-$tag-" replay)
    printf '%s|accept|%s|%s\n' "$c" "$acc" "$lacc" >> "$dir/rows"
    printf '%s|replay A|%s|%s\n' "$c" "$repa" "$lrepa" >> "$dir/rows"
    printf '%s|replay B|%s|%s\n' "$c" "$repb" "$lrepb" >> "$dir/rows"
    curl -s "http://127.0.0.1:${port_a[$c]}/_stats" > "$dir/$c-a.stats" || true
    curl -s "http://127.0.0.1:${port_b[$c]}/_stats" > "$dir/$c-b.stats" || true
done

# the gateways' error logs, then every process stopped, Redis last (a
# gateway whose Redis went away first would log it)
grep -E '\[(error|crit|alert|emerg)\]' "$dir"/*-a.log "$dir"/*-b.log > "$dir/errors" 2>/dev/null || true
for c in $cases; do stop_nginx "$dir/$c-a.pid"; stop_nginx "$dir/$c-b.pid"; done
stop_nginx "$dir/be.pid"
lines=$(wc -l < "$dir/topo.log")
stop_topo

# ---------------------------------------------------------------- report

echo
echo "wrk: ${secs} s, $conns connections, as fast as it goes (req/s, non-2xx, CPU and" \
     "commands per request, other load); pace: $rate req/s for $lat_secs s, 16 connections" \
     "(p50, p99, its non-2xx + errors, its own lateness at p99); µs are CPU time per" \
     "request; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo '| topology | mode | req/s | non-2xx | gateway µs/req | Redis cmd/req (sent) | Redis cmd/req (all) | Redis µs/req | p50 ms | p99 ms | paced non-2xx, errors | pace lag p99 ms | other load on CPU 1 | commands per request, all servers |'
echo '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |'
while IFS='|' read -r c mode rps total non2xx gw cmds sent rus other bd p50 p99 pbad lag pst; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%% | %s |\n' \
        "$(case_name "$c")" "$mode" "$rps" "$non2xx" "$gw" "$sent" "$cmds" "$rus" \
        "$p50" "$p99" "$pbad" "$lag" "$other" "$bd"
    if [ "$non2xx" != 0 ] || [ "$pbad" != 0 ]; then
        echo "$c $mode: $non2xx non-2xx (wrk), $pbad non-2xx or errors (pace: $pst)" >&2
        status=1
    fi
done < "$dir/rows"
echo
# the gateways' counters: accepted, replays, round trips, and whichever of
# the counters of trouble is not 0
printf 'gateway counters (influencers_stats):'
for c in $cases; do
    for n in a b; do
        tr -d '\n ' < "$dir/$c-$n.stats" 2>/dev/null | tr ',{}' '\n\n\n' | tr -d '"' |
        awk -F: -v g="$c-$n" '
            $1 ~ /^(accepted|replays|redisOps)$/ { s = s " " $1 "=" $2 }
            $1 ~ /^(conflicts|mismatches|releases|leaseExpiries|capacityRejections|failed|shareRejections|redisFailures|redisFallbacks|redisStale|resends|unknownOutcomes|keptInDoubt|redisOwed|redisOwedResent|redisOwedAbandoned|redisOwedUnkept|redisUnsafe|redisRestarts|redisDataLost|redisBadValues)$/ && $2 != 0 {
                s = s " " $1 "=" $2 }
            END { printf "%s %s:%s", (NR ? ";" : ""), g, (s == "") ? " no stats" : s }'
    done
done | sed 's/^;//'
echo

echo
tail -n +$((lines + 1)) "$dir/topo.log" | sed 's/^redis-topologies.pl: /Redis: /'
if [ -s "$dir/errors" ]; then
    echo
    echo "gateway error log lines ($(wc -l < "$dir/errors")), the first 20:"
    head -n 20 "$dir/errors"
    status=1
fi
echo "redis-topologies.sh: $(( $(date +%s) - started )) s in all" >&2
exit $status
