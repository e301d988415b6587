#!/usr/bin/env bash
# nginx's configure stops, naming the package to install, when a library
# the module needs is missing:
#
#   t/config-check.sh /usr/share/nginx/src        Debian's nginx-dev tree
#   t/config-check.sh path/to/nginx-1.30.4.tar.gz a fresh copy of a release
#
# (`make config-check [V=1.30.4]`.)  A missing library is made with a
# compiler wrapper handed to configure (--with-cc): it runs gcc, except
# that a command line naming -l<lib> fails as the linker does when the
# library's -dev package is not installed ("cannot find -l<lib>").  nginx's
# own checks run as usual.  For each of jansson, libcrypto and hiredis,
# configure must exit non-zero, report the module's check of that library
# "not found", print the module's error naming the package, have found the
# libraries the module checks before it, and never get to "creating
# objs/Makefile".  The three configure runs go in parallel.
#
# Debian's tree is configured in place with --builddir (its configure
# writes nothing else); any other tree is copied first, since an upstream
# configure writes a Makefile into the tree it runs in.  Ends with
# "config-check: N passed, N failed"; exits non-zero on a failure.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=${1:?usage: t/config-check.sh NGINX_SOURCE_TREE_OR_ARCHIVE}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/inf-config-check-XXXXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# the tree configure runs in
case "$SRC" in
*.tar.gz)
    tree=$tmp/nginx
    mkdir -p "$tree"
    tar -xzf "$SRC" -C "$tree" --strip-components=1
    ;;
*)
    [ -d "$SRC/auto" ] || { echo "config-check: $SRC: no nginx source tree" >&2; exit 1; }
    if [ -f "$SRC/conf_flags" ]; then
        tree=$SRC
    else
        tree=$tmp/nginx
        cp -a "$SRC" "$tree"
    fi
    ;;
esac
if [ -x "$tree/configure" ]; then configure=./configure; else configure=auto/configure; fi
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$tree/src/core/nginx.h")

# the wrapper: gcc, but -l$INF_HIDE_LIB is not there
cat > "$tmp/cc" << 'END'
#!/bin/sh
for a in "$@"; do
    if [ "$a" = "-l$INF_HIDE_LIB" ]; then
        echo "/usr/bin/ld: cannot find -l$INF_HIDE_LIB: No such file or directory" >&2
        exit 1
    fi
done
exec gcc "$@"
END
chmod +x "$tmp/cc"

# library, the module's check (as configure prints it), the package named,
# the checks that must have passed before
libs=(jansson crypto hiredis)
declare -A check package before
check[jansson]='jansson 2.11+ library (json_error_code)'
check[crypto]='OpenSSL 1.1.0+ libcrypto (EVP_MD_CTX_new, EVP_sha256)'
check[hiredis]='hiredis library (command formatting, reply reader)'
package[jansson]=libjansson-dev
package[crypto]=libssl-dev
package[hiredis]=libhiredis-dev
before[jansson]=''
before[crypto]=jansson
before[hiredis]='jansson crypto'

echo "config-check: nginx $version ($SRC), configure with a library missing"

for lib in "${libs[@]}"; do
    (
        cd "$tree"
        INF_HIDE_LIB=$lib $configure --with-cc="$tmp/cc" --with-compat \
            --add-dynamic-module="$REPO" --builddir="$tmp/objs-$lib" \
            > "$tmp/$lib.log" 2>&1
    ) &
    pids+=($!)
done

passed=0
failed=0
ok()   { passed=$((passed + 1)); printf 'ok %d - %s\n' "$((passed + failed))" "$*"; }
fail() { failed=$((failed + 1)); printf 'not ok %d - %s\n' "$((passed + failed))" "$*"; }

i=0
for lib in "${libs[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    i=$((i + 1))
    out=$(cat "$tmp/$lib.log")
    what="nginx $version without lib$lib"
    bad=0

    [ "$rc" != 0 ] || { echo "# configure exited 0"; bad=1; }
    grep -qF "checking for ${check[$lib]} ... not found" <<< "$out" \
        || { echo "# no \"${check[$lib]} ... not found\""; bad=1; }
    grep -q "error: the influencers module requires" <<< "$out" \
        || { echo "# no error of the module's"; bad=1; }
    grep -qF "apt-get install ${package[$lib]}" <<< "$out" \
        || { echo "# the package ${package[$lib]} is not named"; bad=1; }
    for b in ${before[$lib]}; do
        grep -qF "checking for ${check[$b]} ... found" <<< "$out" \
            || { echo "# the check before it, ${check[$b]}, did not pass"; bad=1; }
    done
    if grep -q 'creating .*Makefile\|was configured' <<< "$out"; then
        echo "# configure went on"
        bad=1
    fi

    if [ "$bad" = 0 ]; then
        ok "$what: configure stops and names ${package[$lib]}"
        sed -n '/error: the influencers module/,/^$/p' <<< "$out" | sed 's/^/    /'
    else
        fail "$what: configure stops and names ${package[$lib]}"
        tail -n 15 <<< "$out" | sed 's/^/# /'
    fi
done
pids=()

echo "config-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
