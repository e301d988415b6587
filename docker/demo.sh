#!/usr/bin/env bash
# A local demo of ngx_http_influencers_module on Debian 12, run as root from
# the repository root:
#
#   bash docker/demo.sh            install deps, build, (re)start the demo
#   bash docker/demo.sh stop       stop it (by the PIDs it saved)
#   bash docker/demo.sh status     show whether it runs
#   bash docker/demo.sh foreground like start, but nginx stays in the
#                                  foreground (containers: docker/Dockerfile)
#
# What it starts, all under $DEMO_DIR (default /tmp/influencers-demo):
#   - the stand-in rendering backend, perl t/lib/backend.pl, on
#     127.0.0.1:$DEMO_BACKEND_PORT (18081); every job it receives is appended
#     to $DEMO_DIR/jobs.jsonl
#   - the stock /usr/sbin/nginx with the module, on $DEMO_LISTEN
#     (127.0.0.1:18080), configured from docker/demo.conf
#   - a directory file built from docker/directory.example.json with the
#     sha256 of a freshly generated API key (org_demo, one project)
#
# Environment:
#   DEMO_DIR            demo prefix                      (/tmp/influencers-demo)
#   DEMO_LISTEN         nginx listen address             (127.0.0.1:18080)
#   DEMO_BACKEND_PORT   backend port on 127.0.0.1        (18081)
#   DEMO_SKIP_APT=1     do not run apt-get (deps already installed)
#   DEMO_SKIP_BUILD=1   do not run make (module already built)
#   DEMO_MODULE         the module to load  (build/ngx_http_influencers_module.so)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/tmp/influencers-demo}
DEMO_LISTEN=${DEMO_LISTEN:-127.0.0.1:18080}
DEMO_BACKEND_PORT=${DEMO_BACKEND_PORT:-18081}
DEMO_MODULE=${DEMO_MODULE:-$REPO/build/ngx_http_influencers_module.so}
NGINX=/usr/sbin/nginx
MARKER=.influencers-demo
# the project of docker/directory.example.json
PROJECT_ID=7f3c9a2e-4b1d-4e8a-9c5f-2d6b8e0a1f43
# the placeholder digest in docker/directory.example.json
PLACEHOLDER=0000000000000000000000000000000000000000000000000000000000000000

PACKAGES=(nginx nginx-dev libjansson-dev libssl-dev libhiredis-dev libpcre2-dev zlib1g-dev
          libc6-dev dpkg-dev gcc make perl curl)

case "$DEMO_DIR" in
    /*) ;;
    *) DEMO_DIR="$PWD/$DEMO_DIR" ;;
esac
DEMO_DIR=${DEMO_DIR%/}

say()  { printf '==> %s\n' "$*"; }
warn() { printf 'demo.sh: %s\n' "$*" >&2; }
die()  { warn "$*"; exit 1; }

# host:port of the listen address, for curl
listen_url() {
    local hp=$DEMO_LISTEN
    case "$hp" in
        *:*) ;;
        *) hp="127.0.0.1:$hp" ;;
    esac
    case "$hp" in
        0.0.0.0:*) hp="127.0.0.1:${hp#0.0.0.0:}" ;;
    esac
    printf 'http://%s' "$hp"
}

# true when something accepts TCP connections on 127.0.0.1:$1
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# true when $1 is a live process whose command line contains $2
pid_is() {
    local pid=$1 what=$2 cmd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$what"* ]]
}

# the PIDs of the children of $1 (from /proc, procps is not needed)
children_of() {
    local parent=$1 f stat rest ppid pid
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        rest=${stat##*) }          # after "pid (comm) "
        read -r _ ppid _ <<< "$rest"
        if [ "$ppid" = "$parent" ]; then
            pid=${f#/proc/}
            printf '%s\n' "${pid%/stat}"
        fi
    done
}

# waits up to $2 seconds for process $1 to end; true when it did
wait_gone() {
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        # a zombie child of ours counts as gone
        if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            return 0
        fi
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

# stops process $1 (already checked to be ours): $2 signal, then KILL
stop_pid() {
    local pid=$1 sig=$2 name=$3 kids
    kids=$(children_of "$pid")
    kill -"$sig" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 10; then
        warn "$name ($pid) did not stop on SIG$sig, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || warn "$name ($pid) is still there"
    fi
    # children left behind (nginx workers after a KILLed master, backend
    # connection processes): end them by their PIDs too
    local k
    for k in $kids; do
        if kill -0 "$k" 2>/dev/null; then
            kill -TERM "$k" 2>/dev/null || true
            wait_gone "$k" 3 || kill -KILL "$k" 2>/dev/null || true
        fi
    done
}

do_stop() {
    local stopped=0 pid
    if [ -f "$DEMO_DIR/nginx.pid" ]; then
        pid=$(cat "$DEMO_DIR/nginx.pid" 2>/dev/null || true)
        if pid_is "$pid" nginx; then
            say "stopping nginx (master PID $pid)"
            stop_pid "$pid" TERM nginx
            stopped=1
        fi
        rm -f "$DEMO_DIR/nginx.pid"
    fi
    if [ -f "$DEMO_DIR/backend.pid" ]; then
        pid=$(cat "$DEMO_DIR/backend.pid" 2>/dev/null || true)
        if pid_is "$pid" backend.pl; then
            say "stopping the backend (PID $pid)"
            stop_pid "$pid" TERM backend
            stopped=1
        fi
        rm -f "$DEMO_DIR/backend.pid"
    fi
    if [ "$stopped" = 0 ]; then
        say "no demo running under $DEMO_DIR"
    else
        say "demo stopped"
    fi
}

do_status() {
    local pid rc=0
    pid=$(cat "$DEMO_DIR/nginx.pid" 2>/dev/null || true)
    if pid_is "$pid" nginx; then
        echo "nginx:   running, master PID $pid ($(listen_url))"
    else
        echo "nginx:   not running"; rc=1
    fi
    pid=$(cat "$DEMO_DIR/backend.pid" 2>/dev/null || true)
    if pid_is "$pid" backend.pl; then
        echo "backend: running, PID $pid (127.0.0.1:$DEMO_BACKEND_PORT)"
    else
        echo "backend: not running"; rc=1
    fi
    return $rc
}

install_deps() {
    if [ "${DEMO_SKIP_APT:-}" = 1 ]; then
        say "DEMO_SKIP_APT=1: not running apt-get"
        return
    fi
    [ "$(id -u)" = 0 ] || die "run as root (apt-get), or set DEMO_SKIP_APT=1"
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get update"
    apt-get update
    say "apt-get install ${PACKAGES[*]}"
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
}

build() {
    if [ "${DEMO_SKIP_BUILD:-}" = 1 ]; then
        say "DEMO_SKIP_BUILD=1: not running make"
    else
        say "make (builds build/ngx_http_influencers_module.so)"
        make -C "$REPO"
    fi
    [ -f "$DEMO_MODULE" ] || die "module not found: $DEMO_MODULE"
}

# a fresh demo prefix; only a directory this script made is ever emptied
prepare_dir() {
    if [ -e "$DEMO_DIR" ]; then
        if [ -f "$DEMO_DIR/$MARKER" ]; then
            rm -rf "$DEMO_DIR"
        elif [ -d "$DEMO_DIR" ] && [ -z "$(ls -A "$DEMO_DIR")" ]; then
            rmdir "$DEMO_DIR"
        else
            die "$DEMO_DIR exists and was not made by demo.sh; remove it or set DEMO_DIR"
        fi
    fi
    mkdir -p "$DEMO_DIR"
    chmod 0755 "$DEMO_DIR"      # nginx workers run as nobody
    : > "$DEMO_DIR/$MARKER"
    : > "$DEMO_DIR/jobs.jsonl"
}

make_key_and_directory() {
    local rnd digest
    rnd=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    [ ${#rnd} = 32 ] || die "cannot read /dev/urandom"
    API_KEY="sk_demo_$rnd"
    digest=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)
    [[ "$digest" =~ ^[0-9a-f]{64}$ ]] || die "sha256sum failed"
    sed "s/$PLACEHOLDER/$digest/" "$REPO/docker/directory.example.json" \
        > "$DEMO_DIR/directory.json"
    grep -q "$digest" "$DEMO_DIR/directory.json" \
        || die "docker/directory.example.json lacks the placeholder digest"
    grep -q "\"$PROJECT_ID\"" "$DEMO_DIR/directory.json" \
        || die "docker/directory.example.json lacks project $PROJECT_ID"
    (umask 077; printf '%s\n' "$API_KEY" > "$DEMO_DIR/api-key")
}

write_conf() {
    sed -e "s|@DEMO_DIR@|$DEMO_DIR|g" \
        -e "s|@MODULE@|$DEMO_MODULE|g" \
        -e "s|@LISTEN@|$DEMO_LISTEN|g" \
        -e "s|@BACKEND_PORT@|$DEMO_BACKEND_PORT|g" \
        "$REPO/docker/demo.conf" > "$DEMO_DIR/nginx.conf"
    if grep -q '@[A-Z_]*@' "$DEMO_DIR/nginx.conf"; then
        die "unexpanded placeholder in $DEMO_DIR/nginx.conf"
    fi
}

show_error_log() {
    if [ -s "$DEMO_DIR/error.log" ]; then
        warn "---- $DEMO_DIR/error.log (last 40 lines) ----"
        tail -n 40 "$DEMO_DIR/error.log" >&2
        warn "---- end of error.log ----"
    else
        warn "($DEMO_DIR/error.log is empty or missing)"
    fi
}

start_backend() {
    local port=$DEMO_BACKEND_PORT i pid
    port_busy "$port" && die "127.0.0.1:$port is already in use (DEMO_BACKEND_PORT)"
    say "starting the backend: perl t/lib/backend.pl --port $port --record $DEMO_DIR/jobs.jsonl"
    nohup perl "$REPO/t/lib/backend.pl" --port "$port" \
        --record "$DEMO_DIR/jobs.jsonl" \
        > "$DEMO_DIR/backend.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$DEMO_DIR/backend.pid"
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$DEMO_DIR/backend.log" >&2 || true
            rm -f "$DEMO_DIR/backend.pid"
            die "the backend exited at start"
        fi
        port_busy "$port" && return 0
        sleep 0.1
    done
    cat "$DEMO_DIR/backend.log" >&2 || true
    do_stop >&2
    die "the backend does not listen on 127.0.0.1:$port after 10s"
}

# $1 = foreground: exec nginx with daemon off (the backend keeps running)
start_nginx() {
    local url code i out pid
    url=$(listen_url)
    port_busy "${url##*:}" && { do_stop >&2; die "${url#http://} is already in use (DEMO_LISTEN)"; }

    say "checking the configuration: $NGINX -t -p $DEMO_DIR -e $DEMO_DIR/error.log -c $DEMO_DIR/nginx.conf"
    if ! out=$("$NGINX" -t -p "$DEMO_DIR" -e "$DEMO_DIR/error.log" \
                   -c "$DEMO_DIR/nginx.conf" 2>&1); then
        printf '%s\n' "$out" >&2
        show_error_log
        do_stop >&2
        die "nginx -t failed"
    fi

    if [ "${1:-}" = foreground ]; then
        say "starting nginx in the foreground on ${url#http://} (Ctrl-C stops it)"
        print_usage
        trap 'do_stop' EXIT
        "$NGINX" -p "$DEMO_DIR" -e "$DEMO_DIR/error.log" \
            -c "$DEMO_DIR/nginx.conf" -g 'daemon off;' &
        pid=$!
        trap 'kill -TERM '"$pid"' 2>/dev/null || true' INT TERM
        wait "$pid" || true
        wait "$pid" 2>/dev/null || true
        return 0
    fi

    say "starting nginx: $NGINX -p $DEMO_DIR -e $DEMO_DIR/error.log -c $DEMO_DIR/nginx.conf"
    if ! out=$("$NGINX" -p "$DEMO_DIR" -e "$DEMO_DIR/error.log" \
                   -c "$DEMO_DIR/nginx.conf" 2>&1); then
        printf '%s\n' "$out" >&2
        show_error_log
        do_stop >&2
        die "nginx did not start"
    fi

    for ((i = 0; i < 100; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
                    "$url/v1/projects/$PROJECT_ID/influencers" || true)
        if [ -n "$code" ] && [ "$code" != 000 ]; then
            # GET on the endpoint: the module's 405, as JSON
            if pid_is "$(cat "$DEMO_DIR/nginx.pid" 2>/dev/null)" nginx; then
                say "nginx answers on ${url#http://} (GET -> $code)"
                return 0
            fi
        fi
        sleep 0.1
    done
    show_error_log
    do_stop >&2
    die "nginx does not answer on ${url#http://} after 10s"
}

print_usage() {
    local url
    url=$(listen_url)
    cat <<EOF

The influencers gateway demo is running.
  nginx:    $(listen_url)   (config $DEMO_DIR/nginx.conf, log $DEMO_DIR/error.log)
  backend:  127.0.0.1:$DEMO_BACKEND_PORT  (stand-in renderer, t/lib/backend.pl)
  API key:  $API_KEY   (also in $DEMO_DIR/api-key; only its sha256 is in
            $DEMO_DIR/directory.json, org "org_demo", project $PROJECT_ID)

Create an influencer (the reference page's request; expect HTTP 202):

curl -i -X POST $url/v1/projects/$PROJECT_ID/influencers \\
  -H "Authorization: Bearer $API_KEY" \\
  -H "Content-Type: application/json" \\
  -H "Idempotency-Key: 8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55" \\
  -d '{
    "gender": "female",
    "ageRange": "young_adult",
    "prompt": "barista energy, soft morning light"
  }'

Sending it again replays the same 202 (Idempotent-Replayed: true, no new job);
change the Idempotency-Key (or drop it) for a new job.

Jobs the backend received (one JSON line each, the forwarded job in "body"):
  cat $DEMO_DIR/jobs.jsonl

Zone counters:
  curl -s $url/_stats

Stop the demo:
  bash docker/demo.sh stop
EOF
    if [ "$DEMO_DIR" != /tmp/influencers-demo ]; then
        echo "  (with DEMO_DIR=$DEMO_DIR)"
    fi
}

do_start() {
    local mode=${1:-}
    install_deps
    [ -x "$NGINX" ] || die "$NGINX not found (apt-get install nginx)"
    [ -f "$REPO/t/lib/backend.pl" ] || die "t/lib/backend.pl not found"
    build
    do_stop
    prepare_dir
    make_key_and_directory
    write_conf
    start_backend
    if [ "$mode" = foreground ]; then
        start_nginx foreground
        return
    fi
    start_nginx
    print_usage
}

case "${1:-start}" in
    start)      do_start ;;
    foreground) do_start foreground ;;
    stop)       do_stop ;;
    status)     do_status ;;
    -h|--help|help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "usage: bash docker/demo.sh [start|stop|status|foreground]" ;;
esac
