#!/bin/sh
# Runs libFuzzer harnesses one after the other, each for a bounded time, on
# a copy of its seed corpus in a temporary directory (the repository's
# corpus is never written to), with its dictionary.  A crash, a leak, a
# sanitizer report or a broken property fails the run: the input that did
# it and the fuzzer's log are kept in ARTIFACTS.
#
#   t/fuzz/run.sh BIN_DIR SECONDS ARTIFACTS NAME...
#
# Extra libFuzzer options may be given in FUZZ_OPTIONS; with FUZZ_KEEP set
# to a directory, each grown corpus is kept there, as FUZZ_KEEP/NAME.

set -u

bin=$1 seconds=$2 artifacts=$3
shift 3

here=$(cd "$(dirname "$0")" && pwd)
failed=

mkdir -p "$artifacts"

for name in "$@"; do
    case $name in
        body|directory) dict=json ;;
        *)              dict=$name ;;
    esac

    work=$(mktemp -d "${TMPDIR:-/tmp}/influencers-fuzz.XXXXXX") || exit 1
    mkdir "$work/corpus"
    cp "$here/corpus/$name/"* "$work/corpus/"

    # shellcheck disable=SC2086
    "$bin/fuzz_$name" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
        -dict="$here/$dict.dict" -artifact_prefix="$artifacts/$name-" \
        -print_final_stats=1 ${FUZZ_OPTIONS:-} "$work/corpus" \
        > "$work/log" 2>&1
    rc=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log")
    last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')

    if [ "$rc" = 0 ]; then
        printf 'fuzz_%s: ok, %s runs (%s/s) in %ss, cov %s ft %s, corpus %s\n' \
            "$name" "${runs:-?}" "${speed:-?}" "$seconds" "${cov:-?}" \
            "${ft:-?}" "${corp:-?}"
    else
        cp "$work/log" "$artifacts/$name.log"
        printf 'fuzz_%s: FAILED (exit %s); log %s, input %s*\n' "$name" "$rc" \
            "$artifacts/$name.log" "$artifacts/$name-"
        grep -E 'ERROR|SUMMARY|fuzz_[a-z]+: ' "$work/log" | head -n 5
        failed="$failed $name"
    fi

    if [ -n "${FUZZ_KEEP:-}" ]; then
        mkdir -p "$FUZZ_KEEP"
        rm -rf "${FUZZ_KEEP:?}/$name"
        mv "$work/corpus" "$FUZZ_KEEP/$name"
    fi

    rm -rf "$work"
done

if [ -n "$failed" ]; then
    echo "fuzzing failed:$failed"
    exit 1
fi
