#!/usr/bin/env bash
# t/bench/secrets.sh [LEVEL ...]   (by hand, not in CI; default: debug)
#
# CONTRACT 5: "An API key never appears in a log line, an error body or the
# zone."  For each LEVEL (debug, info, notice, ...) this runs the whole
# prove suite with every test's error_log forced to LEVEL
# (INFLUENCERS_LOG_LEVEL), keeps every test's logs, backend records and
# state files (INFLUENCERS_KEEP_LOGS), and searches them for every secret
# the tests use: the API keys of t/lib/InfTest.pm (K_*), every other
# 'sk_...' key written in t/*.t, and the Redis passwords of the fleet tests
# (as patterns: they hold the test's PID).  Then it reports, per secret,
# where it was found, sorted into:
#
#   expected   nginx core's own lines: at debug every request header
#              ("http header:", "http2 header:"); at info a duplicated or
#              invalid header line ("client sent duplicate header line",
#              "client sent invalid header line", over HTTP/2 "client sent
#              header ... with invalid value"), logged in full; and the
#              backend records of a test's own plain proxy_pass location
#              (t/6*.t compare the module with one), which pass the
#              client's headers on by design
#   UNEXPECTED anything else: a line of the module, a line at notice or
#              above, an access log, the module's forward (a backend record
#              with a jobId), a state file
#
# and exits 1 when anything is UNEXPECTED.  A test that reads its own log
# lines may fail when the level is forced (t/18 needs debug lines, some
# count lines at info): the suite's failures are shown, as a warning.
# INFLUENCERS_MODULE / INFLUENCERS_ASAN are passed on to the suite.  The
# kept logs are removed at the end unless SECRETS_KEEP=1.  A run takes
# about as long as `prove -r t/` (2-3 minutes) per level.
#
#   t/bench/secrets.sh                 # debug: the most that is ever logged
#   t/bench/secrets.sh debug info notice

set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$top"

levels=("$@")
[ ${#levels[@]} -gt 0 ] || levels=(debug)
for l in "${levels[@]}"; do
    case $l in
        debug|info|notice|warn|error|crit|alert|emerg) ;;
        *) echo "secrets.sh: unknown log level '$l'" >&2; exit 2 ;;
    esac
done

if ! /usr/sbin/nginx -V 2>&1 | grep -q -- '--with-debug'; then
    echo "note: ${INFLUENCERS_NGINX:-/usr/sbin/nginx} is built without --with-debug:" \
         "'debug' logs what 'info' does"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/inf-secrets-XXXXXXXX")
if [ "${SECRETS_KEEP:-}" = 1 ]; then
    echo "SECRETS_KEEP=1: logs kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi

status=0
for level in "${levels[@]}"; do
    logs=$work/$level
    mkdir -p "$logs"
    printf '\n==> prove -r t/ with every error_log at %s\n' "$level"
    start=$(date +%s)
    INFLUENCERS_LOG_LEVEL=$level INFLUENCERS_KEEP_LOGS=$logs \
        timeout 1800 prove -r t/ > "$work/prove-$level.log" 2>&1 < /dev/null
    rc=$?
    tail -n 1 "$work/prove-$level.log"
    echo "($(( $(date +%s) - start )) s, prove exit status $rc)"
    if [ "$rc" != 0 ]; then
        echo "warning: the suite failed at $level (a test that reads its own" \
             "log lines may, at a level it does not expect); its summary:"
        sed -n '/^Test Summary Report/,$p' "$work/prove-$level.log" | head -n 30
    fi

    printf '\n==> searching %s files kept at %s for the secrets\n' \
        "$(find "$logs" -type f | wc -l)" "$level"
    perl - "$top" "$logs" "$level" <<'PERL' || status=1
use strict;
use warnings;
use File::Find;

my ($top, $logs, $level) = @ARGV;

sub slurp { open my $f, '<:raw', $_[0] or return ''; local $/; return <$f> // '' }

# the secrets: name => regex
my %secret;
my $lib = slurp("$top/t/lib/InfTest.pm");
while ($lib =~ /\b(K_\w+)\s*=>\s*'([^']+)'/g) {
    $secret{$1} = quotemeta $2;
}
for my $t (glob "$top/t/*.t") {
    my $text = slurp($t);
    (my $name = $t) =~ s{.*/}{};
    while ($text =~ /'(sk_[A-Za-z0-9_]{6,})'/g) {
        my $k = $1;
        next if grep { $k =~ /^$_$/ } values %secret;
        $secret{"$name $k"} = quotemeta $k;
    }
    # Redis passwords: my $PW = "Fl33t-pw-$$-secret"; ($$: the test's PID),
    # the variables named *PW* or *PASS*, or listed in my @PASSWORDS = (...)
    my %pwvar;
    while ($text =~ /\bmy\s+\@\w*(?:PASSWORD|SECRET)\w*\s*=\s*\(([^)]*)\)/g) {
        $pwvar{$_} = 1 for $1 =~ /\$(\w+)/g;
    }
    while ($text =~ /\bmy\s+\$(\w+)\s*=\s*(["'])(.+?)\2\s*;/g) {
        my ($var, $q, $v) = ($1, $2, $3);
        next unless $pwvar{$var} || $var =~ /PW|PASS/;
        my $re = join '', map { $_ eq '$$' ? '\d+' : /^\$/ ? '.+?' : quotemeta }
                          split /(\$\$|\$\w+)/, $v;
        $re = quotemeta $v if $q eq "'";
        $secret{"$name \$$var"} = $re;
    }
}

my @files;
find({ no_chdir => 1, wanted => sub { push @files, $File::Find::name if -f } },
     $logs);

# nginx core's own lines that hold a header in full
my @EXPECTED = (
    [debug => qr/\] \d+#\d+: (?:\*\d+ )?http2? header: "/,
     'debug: core logs each request header'],
    [info  => qr/client sent duplicate header line: /,
     'info: core logs a duplicated header line in full'],
    [info  => qr/client sent invalid header line: /,
     'info: core logs an invalid header line up to the bad byte'],
    [info  => qr/client sent header "[^"]*" with invalid value: /,
     'info: core (HTTP/2) logs a header with an invalid value in full'],
);
my %RANK = (debug => 0, info => 1, notice => 2, warn => 3, error => 4,
            crit => 5, alert => 6, emerg => 7);

my (%count, %unexpected, %expected);
for my $f (@files) {
    (my $rel = $f) =~ s{^\Q$logs\E/}{};
    (my $kind = $f) =~ s{.*/}{};
    my $text = slurp($f);
    next unless length $text;
    for my $name (sort keys %secret) {
        my $re = $secret{$name};
        next unless $text =~ /$re/;
        for my $line (split /\n/, $text) {
            next unless $line =~ /$re/;
            $count{$name}++;
            my ($lvl) = $line =~ /^\d{4}\/\d\d\/\d\d [\d:]+ \[(\w+)\]/;
            my $why;
            if ($kind =~ /\.requests\.jsonl$/ && $line !~ /\\"jobId\\":\\"job_/) {
                $why = 'a test\'s own plain proxy_pass (not the module\'s forward)';
            }
            if ($kind =~ /error\.log$/ && defined $lvl) {
                for my $e (@EXPECTED) {
                    if ($lvl eq $e->[0] && $line =~ $e->[1]) {
                        $why = $e->[2];
                        last;
                    }
                }
            }
            if (defined $why) {
                $expected{$name}{$why}++;
            } else {
                (my $short = $line) =~ s/(.{240}).+/$1.../;
                push @{ $unexpected{$name} },
                    "$rel [" . ($lvl // $kind) . "]: $short";
            }
        }
    }
}

printf "%-52s %7s  %s\n", 'secret', 'lines', 'where';
for my $name (sort keys %secret) {
    my $n = $count{$name} // 0;
    my @where = map { "$expected{$name}{$_} x $_" } sort keys %{ $expected{$name} || {} };
    push @where, scalar(@{ $unexpected{$name} }) . ' x UNEXPECTED'
        if $unexpected{$name};
    printf "%-52s %7d  %s\n", $name, $n, @where ? join('; ', @where) : '-';
}

my $bad = 0;
for my $name (sort keys %unexpected) {
    my @l = @{ $unexpected{$name} };
    $bad += @l;
    print "\nUNEXPECTED: $name in " . scalar(@l) . " line(s), the first ones:\n";
    print "  $_\n" for @l[0 .. ($#l < 9 ? $#l : 9)];
}
print "\n", ($bad ? "FAIL: $bad line(s) hold a secret where nothing may"
                  : "OK: no secret outside nginx core's own header lines"),
      " (error_log $level, " . scalar(@files) . " files)\n";
exit($bad ? 1 : 0);
PERL
done

exit $status
