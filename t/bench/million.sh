#!/usr/bin/env bash
# One million mixed requests against a 4-worker gateway, on loopback, run by
# hand (not in CI):
#
#   bash t/bench/million.sh [count] [max-seconds] [clients]
#
# count (default 1000000) requests, stopping by itself after max-seconds
# (default 1800) even if the count is not reached (it then says so).  The
# load (t/bench/million.pl, core Perl: forked clients, two keep-alive
# connections each) mixes new keys, retries of accepted keys, concurrent
# duplicates (one key on two connections at once, and one key per 200 ms
# that every client sends), invalid bodies, a key reused with another body
# and requests without a key; each body that can be accepted carries a
# marker in its prompt.  The backend is a second nginx that logs each job's
# body ($request_body) and answers 202, so it never slows the gateway.
#
# Afterwards: the backend's jobs must equal the distinct accepted keys plus
# the keyless accepts, each marker exactly once; the gateway workers' RSS
# and the zone's use (sampled every 5 s; ttl=20s so that the zone reaches
# a steady state) are reported at the start, after warm-up, at the end and
# at their maximum; and the gateway's error log must have no line above
# [info] during the load.  Prints markdown tables; exits 1 if a check fails.
#
# Needs a built module (make; or INFLUENCERS_MODULE=/path/to/the.so; with
# INFLUENCERS_ASAN=1 the gateway runs with libasan preloaded, for the .so
# of make asan).
# Starts two nginx on free loopback ports and stops them by PID at exit;
# the temporary directory is removed (INFLUENCERS_LEAVE=1 keeps it).

set -euo pipefail
trap 'echo "million.sh: stopped by a failure at line $LINENO" >&2' ERR

count=${1:-1000000}
maxsecs=${2:-1800}
clients=${3:-4}
top=$(cd "$(dirname "$0")/../.." && pwd)
module=${INFLUENCERS_MODULE:-$top/build/ngx_http_influencers_module.so}
nginx=${INFLUENCERS_NGINX:-/usr/sbin/nginx}
ttl=20s
[ -f "$module" ] || { echo "no module at $module (make, or INFLUENCERS_MODULE)" >&2; exit 2; }

dir=$(mktemp -d /tmp/influencers-million.XXXXXX)
chmod 755 "$dir"
key=sk_million_$$_$RANDOM
project=7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d

stop_nginx() {   # $1: pid file
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill -QUIT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

loadpid=
cleanup() {
    [ -n "$loadpid" ] && kill -TERM "$loadpid" 2>/dev/null || true
    stop_nginx "$dir/gw.pid"
    stop_nginx "$dir/be.pid"
    if [ -n "${INFLUENCERS_LEAVE:-}" ]; then
        echo "kept $dir" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

read -r gport bport < <(perl -MIO::Socket::INET -e '
    my @s = map { IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0,
                                        Listen => 1, ReuseAddr => 1) } 1 .. 2;
    print join(" ", map { $_->sockport } @s), "\n"')

digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
cat > "$dir/directory.json" <<JSON
{"keys": [{"sha256": "$digest", "org": "org_million",
           "scopes": ["influencers:write"]}],
 "projects": [{"id": "$project", "org": "org_million",
               "targetGender": "female"}]}
JSON

temps="client_body_temp_path $dir/b; proxy_temp_path $dir/p;
       fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;"

cat > "$dir/be.conf" <<CONF
worker_processes 1; pid $dir/be.pid; error_log $dir/be.log warn;
events { worker_connections 1024; }
http { access_log off; $temps
  log_format jobs escape=none '\$request_body';
  upstream self { server 127.0.0.1:$bport; keepalive 32; }
  server { listen 127.0.0.1:$bport; keepalive_requests 1000000;
    location = /jobs {
      client_body_in_single_buffer on; client_body_buffer_size 16k;
      access_log $dir/jobs.log jobs buffer=256k flush=1s;
      proxy_pass http://self/ok; proxy_http_version 1.1;
      proxy_set_header Connection ""; }
    location = /ok { return 202 '{"accepted":true}'; } } }
CONF

cat > "$dir/gw.conf" <<CONF
load_module $module;
worker_processes 4; pid $dir/gw.pid; error_log $dir/gw.log info;
worker_rlimit_nofile 4096;
events { worker_connections 1024; }
http { access_log off; $temps
  influencers_zone zone=jobs:64m ttl=$ttl lease=10s org_share=100%;
  upstream render { server 127.0.0.1:$bport; keepalive 64; }
  server { listen 127.0.0.1:$gport; keepalive_requests 10000;
    error_page 400 404 405 413 414 494 500 502 503 504 /_influencers/error;
    location = /_influencers/error { internal; influencers_errors; }
    location ~ ^/v1/projects/[^/]+/influencers\$ {
      influencers zone=jobs; influencers_backend /_render;
      influencers_directory $dir/directory.json; }
    location = /_render { internal; proxy_pass http://render/jobs;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ignore_client_abort on;
      proxy_connect_timeout 2s; proxy_read_timeout 5s; }
    location = /_stats { allow 127.0.0.1; deny all;
      influencers_stats zone=jobs; } } }
CONF

"$nginx" -p "$dir" -c "$dir/be.conf" -e "$dir/be.log"
if [ -n "${INFLUENCERS_ASAN:-}" ]; then    # the module built with ASan (make asan)
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
        "$nginx" -p "$dir" -c "$dir/gw.conf" -e "$dir/gw.log"
else
    "$nginx" -p "$dir" -c "$dir/gw.conf" -e "$dir/gw.log"
fi
for _ in $(seq 1 50); do
    [ "$(pgrep -P "$(cat "$dir/gw.pid" 2>/dev/null || echo 1)" 2>/dev/null | wc -l)" -ge 4 ] && break
    sleep 0.1
done
curl -s -o /dev/null -w '' "http://127.0.0.1:$gport/_stats" || { echo "gateway not up" >&2; exit 1; }

echo "gateway 127.0.0.1:$gport (4 workers, zone 64m ttl=$ttl), backend 127.0.0.1:$bport;" \
     "$count requests from $clients clients, at most $maxsecs s" >&2

off0=$(stat -c %s "$dir/gw.log")
start=$(date +%s.%N)
perl "$top/t/bench/million.pl" --port "$gport" --count "$count" \
    --deadline "$(awk -v s="$start" -v m="$maxsecs" 'BEGIN { printf "%.1f", s + m }')" \
    --clients "$clients" --api-key "$key" --project "$project" --out "$dir" \
    --master "$(cat "$dir/gw.pid")" &
loadpid=$!
wait "$loadpid"
loadpid=
end=$(date +%s.%N)
sleep 1
off1=$(stat -c %s "$dir/gw.log")
curl -s "http://127.0.0.1:$gport/_stats" > "$dir/stats.final.json"

# the logs are complete once both have stopped
stop_nginx "$dir/gw.pid"
stop_nginx "$dir/be.pid"

# ---------------------------------------------------------------- checks

fail=0
cd "$dir"
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

perl -MJSON::PP -e '
    my (%c, @odd, $sent, $dl);
    for my $f (glob "client.*") {
        open my $fh, "<", $f or next;
        my $j = JSON::PP->new->decode(scalar <$fh>);
        $sent += $j->{sent}; $dl ||= $j->{deadline};
        $c{$_} += $j->{count}{$_} for keys %{ $j->{count} };
        push @odd, @{ $j->{odd} };
    }
    print "SENT $sent\nDEADLINE ", ($dl ? 1 : 0), "\n";
    print "COUNT $_ $c{$_}\n" for sort keys %c;
    print "ODD $_\n" for @odd[0 .. ($#odd < 19 ? $#odd : 19)];
    print "ODDN ", scalar(@odd), "\n";
' > summary.txt
sent=$(awk '/^SENT/ {print $2}' summary.txt)
oddn=$(awk '/^ODDN/ {print $2}' summary.txt)

cat expect.* | sort > exp.s
sort -u exp.s > exp.u
grep -o '"prompt":"[^"]*"' jobs.log | sed 's/^"prompt":"//; s/"$//' | sort > fwd.s || true
sort -u fwd.s > fwd.u
cat broken.* | sort -u > brk.u
jobs=$(wc -l < jobs.log)
jobs_marked=$(wc -l < fwd.s)
exp_dup=$(uniq -d exp.s | wc -l)
fwd_dup=$(uniq -d fwd.s | wc -l)
missing=$(comm -23 exp.u fwd.u | wc -l)
extra=$(comm -13 exp.u fwd.u | comm -23 - brk.u | wc -l)
broken=$(wc -l < brk.u)
keyless=$(grep -c '^n' exp.u || true)
distinct=$(cat acc.* | sort -u | wc -l)
keyed_new=$(grep -vc '^n' exp.u || true)
stray=$(grep -c '^b' fwd.u || true)

echo
echo "## One million requests: $sent requests in $secs s ($(awk -v n="$sent" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') req/s), $clients clients, 4 workers"
[ "$(awk '/^DEADLINE/ {print $2}' summary.txt)" = 1 ] && echo "(stopped at the time limit of $maxsecs s before the count of $count)"
echo
echo "| request | answer | count |"
echo "| --- | --- | ---: |"
awk '/^COUNT/ { st = ($3 == "0") ? "broken connection" : $3; if (NF == 5) st = st " (replay)";
               printf "| %s | %s | %d |\n", $2, st, $NF }' summary.txt
echo
echo "| check | value |"
echo "| --- | ---: |"
printf '| jobs the backend received | %d |\n' "$jobs"
printf '| distinct accepted keys | %d |\n' "$distinct"
printf '| accepts without a key | %d |\n' "$keyless"
printf '| keys accepted as new (202 without Idempotent-Replayed) | %d |\n' "$keyed_new"
printf '| markers forwarded twice or more | %d |\n' "$fwd_dup"
printf '| markers accepted as new twice or more | %d |\n' "$exp_dup"
printf '| accepted, never forwarded | %d |\n' "$missing"
printf '| forwarded, never accepted (broken connections aside) | %d |\n' "$extra"
printf '| invalid or reused bodies forwarded | %d |\n' "$stray"
printf '| broken connections | %d |\n' "$broken"
printf '| unexpected answers | %d |\n' "$oddn"

[ "$jobs" -eq $((distinct + keyless)) ] || { echo "FAIL: jobs $jobs != distinct accepted keys $distinct + keyless $keyless" >&2; fail=1; }
[ "$jobs" -eq "$jobs_marked" ] || { echo "FAIL: $((jobs - jobs_marked)) jobs without a marker" >&2; fail=1; }
[ "$keyed_new" -eq "$distinct" ] || { echo "FAIL: keys accepted as new $keyed_new != distinct accepted keys $distinct" >&2; fail=1; }
for v in fwd_dup exp_dup missing extra stray oddn; do
    [ "${!v}" -eq 0 ] || { echo "FAIL: $v = ${!v}" >&2; fail=1; }
done
grep '^ODD ' summary.txt | head -20 >&2 || true

# RSS and zone: first sample, first one after the warm-up (ttl + 10 s: the
# zone's entries then expire as fast as they come), last, maximum
echo
echo "| sampled every 5 s | start | after warm-up | end | max |"
echo "| --- | ---: | ---: | ---: | ---: |"
awk -F'\t' -v warm=30 '
    NR == 1 { next }
    { n++; t[n] = $1; rss[n] = $4; wmax[n] = $5; ent[n] = $6; byt[n] = $9; inf[n] = $8;
      anon[n] = $13; cap[n] = $14 }
    END {
        w = n; for (i = 1; i <= n; i++) if (t[i] >= warm) { w = i; break }
        split("rss wmax ent byt", names, " ")
        for (i = 1; i <= n; i++) {
            if (rss[i] > mr) mr = rss[i]; if (wmax[i] > mw) mw = wmax[i];
            if (ent[i] > me) me = ent[i]; if (byt[i] > mb) mb = byt[i];
            if (inf[i] > mi) mi = inf[i]; if (anon[i] > ma) ma = anon[i];
        }
        printf "| RSS of the 4 workers, kB | %d | %d | %d | %d |\n", rss[1], rss[w], rss[n], mr
        printf "| RSS of the largest worker, kB | %d | %d | %d | %d |\n", wmax[1], wmax[w], wmax[n], mw
        printf "| private memory (RssAnon) of the 4 workers, kB | %d | %d | %d | %d |\n", anon[1], anon[w], anon[n], ma
        printf "| zone entries | %d | %d | %d | %d |\n", ent[1], ent[w], ent[n], me
        printf "| zone bytesInUse | %d | %d | %d | %d |\n", byt[1], byt[w], byt[n], mb
        printf "| zone inflight | %d | %d | %d | %d |\n", inf[1], inf[w], inf[n], mi
        printf "| zone capacityRejections (503) | %d | %d | %d | %d |\n", cap[1], cap[w], cap[n], cap[n]
        printf "WARM %d %d %d %d %d %d\n", rss[w], rss[n], ent[w], ent[n], anon[w], anon[n] > "/dev/stderr"
    }' samples.tsv 2> warm.txt
read -r _ rss_w rss_e ent_w ent_e anon_w anon_e < warm.txt
if [ "$anon_e" -gt $((anon_w + anon_w / 10 + 4096)) ]; then
    echo "FAIL: the workers' private memory grew after the warm-up: $anon_w -> $anon_e kB" >&2; fail=1
fi
inflight=$(perl -MJSON::PP -e 'local $/; my $j = JSON::PP->new->decode(<STDIN>); print $j->{inflight} // -1' < stats.final.json)
echo
echo "Final stats: $(cat stats.final.json)"
[ "$inflight" -eq 0 ] || { echo "FAIL: $inflight in flight at the end" >&2; fail=1; }

# the error log during the load: nothing above [info]
# (head stops reading early: tail's SIGPIPE is no failure)
tail -c +"$((off0 + 1))" gw.log | head -c "$((off1 - off0))" > gw.load.log || true
above=$(grep -Ec '\[(notice|warn|error|crit|alert|emerg)\]' gw.load.log || true)
echo
echo "error.log during the load: $(wc -l < gw.load.log) lines, $above above [info]"
if [ "$above" -ne 0 ]; then
    grep -E '\[(notice|warn|error|crit|alert|emerg)\]' gw.load.log | head -10 >&2 || true
    fail=1
fi
grep -E '\[(crit|alert|emerg)\]|Sanitizer|==[0-9]+==ERROR' gw.log >&2 && fail=1

[ "$fail" -eq 0 ] && echo "all checks passed" || echo "SOME CHECKS FAILED" >&2
exit "$fail"
