package Hostile;

# The hostile catalogues' common part: t/50-hostile.t over HTTP/1.x and
# t/51-hostile-h2.t over HTTP/2 with TLS send different bytes and check the
# same things.  Each hostile request is answered with one JSON error (never
# a 500, never HTML); after each group nginx is still up (the same master
# and workers, no worker exited), nothing was forwarded, nothing was stored
# (the zone's counters unchanged), and error.log has no [alert], [crit] or
# Sanitizer line; at the end the count of requests and their answers.
#
#   Hostile::start($t, proto => 'h2', send => sub { my ($body, %o) = @_; .. });
#   case($name, $r, $status, $code, message => .., details => ..);
#   body_case($name, $body, form($BADJSON), %send_options);
#   refused_or_body($r, nginx_at_least('1.29.4'), $name_400, $name_422);
#   counted(1, 'closed');        # a case checked by the test itself
#   invariants('NUL bytes');     # after a group
#   Hostile::the_count('hostile requests');  Hostile::the_end();
#
# One catalogue a test process: start() records nginx as it is (master,
# workers, forwards, the zone's counters) and the functions act on it.

use strict;
use warnings;

use Exporter 'import';
use Test::More ();
use Time::HiRes ();
use InfTest qw(:messages);

# the module's messages (InfTest's) given on to the catalogues
our @EXPORT_OK = qw(
    case body_case counted invariants form field printable
    refused_or_body max_headers_case
    $EM $NAME $UNK $GENUM $AGENUM $NUMBER $BADJSON $BADUTF8 $BADESC $DEEP
    $IDEM_MSG $IDEM_BAD $IDEM_TWICE
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my @COUNTERS = qw(claims entries keyed inflight accepted replays conflicts
                  mismatches);

my $C;      # the catalogue

# nginx as it is before the first hostile request; proto 'h1' (the
# default) or 'h2'; send($body, %o): a request with that body, answered
sub start {
    my ($t, %o) = @_;
    $C = {
        t        => $t,
        h2       => ($o{proto} // 'h1') eq 'h2',
        send     => $o{send},
        master   => $t->nginx_pid,
        workers  => [$t->worker_pids],
        forwards => $t->forwards,
        stored   => scalar $t->stats,
        n        => 0,          # hostile requests sent
        status   => {},         # how they were answered
    };
    return $C;
}

sub master   { return $C->{master}; }
sub workers  { return @{ $C->{workers} }; }
sub forwards { return $C->{forwards}; }
sub stored   { return $C->{stored}; }

# $n hostile requests more, answered as @kinds
sub counted {
    my ($n, @kinds) = @_;
    $C->{n} += $n;
    $C->{status}{$_}++ for @kinds;
}

# one hostile request answered with one JSON error (over HTTP/1.x also:
# one answer on the connection, unless $o{more_answers}); over HTTP/2 the
# names start with "h2: "
sub case {
    my ($name, $r, $status, $code, %o) = @_;
    counted(1, $status);
    my %ce;
    $ce{details} = { formErrors => [], fieldErrors => {}, %{ $o{details} } }
        if $o{details};
    $name = "h2: $name" if $C->{h2};
    my $ok = InfTest::check_error($r, $status, $code, $o{message}, $name, %ce);
    unless ($C->{h2} || $o{more_answers}) {
        my @lines = ($r->raw // '') =~ m{^HTTP/1\.[01] [2-5]\d\d}mg;
        Test::More::is(scalar @lines, 1, "$name: one answer");
    }
    Test::More::unlike($C->{h2} ? $r->body : $r->raw // '',
                       qr/<html|<body|<center/i, "$name: no HTML");
    return $ok;
}

# a 422 VALIDATION "Invalid body." with these details
sub body_case {
    my ($name, $body, $details, %o) = @_;
    return case("body: $name", $C->{send}->($body, %o), 422, 'VALIDATION',
                message => 'Invalid body.', details => $details);
}

# a request the running nginx refuses ($refused, by its version: its 400,
# as JSON, named $when_refused) or lets through to the module, where its
# body, {"name":"Ava"}, decides ($when_through: the body's 422)
sub refused_or_body {
    my ($r, $refused, $when_refused, $when_through) = @_;
    return case($when_refused, $r, 400, 'BAD_REQUEST') if $refused;
    return case($when_through, $r, 422, 'VALIDATION',
                message => 'Invalid body.', details => field(name => $NAME));
}

# 1001 header lines with the body {"name":"Ava"}: nginx with max_headers
# (1000 by default; 1.29.8 and later, Debian 12's 1.22.1 by a backport)
# answers 494, which error_page turns into a 400, as JSON; without it the
# body decides
sub max_headers_case {
    my ($r) = @_;
    return refused_or_body($r, InfTest::nginx_knows('max_headers 1000'),
        '1001 header lines (over max_headers): nginx\'s 494, as JSON 400',
        '1001 header lines (an nginx without max_headers): the body\'s 422');
}

sub form  { return { formErrors => [@_] } }
sub field { my ($f, @m) = @_; return { fieldErrors => { $f => [@m] } } }

# bytes for a test name: escaped, cut at 60
sub printable {
    my ($s) = @_;
    $s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    return length $s > 60 ? substr($s, 0, 57) . '...' : $s;
}

# after a group: nginx intact, nothing forwarded, nothing stored
sub invariants {
    my ($group) = @_;
    my $t = $C->{t};
    # a request refused after the fact would be forwarded just after its
    # answer: give such a forward the time to show
    Time::HiRes::sleep(0.2);
    Test::More::subtest("$group: nginx intact, nothing forwarded, nothing stored" => sub {
        Test::More::ok($t->nginx_alive, 'the master is alive');
        Test::More::is($t->nginx_pid, $C->{master}, 'the same master');
        Test::More::is_deeply([$t->worker_pids], $C->{workers}, 'the same workers')
            or Test::More::diag('workers now: ' . join(' ', $t->worker_pids));
        Test::More::is($t->count_log(qr/exited on signal|worker process \d+ exited/),
                       0, 'no worker exited');
        Test::More::is($t->forwards, $C->{forwards}, 'nothing forwarded');
        my $s = $t->stats;
        Test::More::is_deeply({ map { $_ => $s->{$_} } @COUNTERS },
                              { map { $_ => $C->{stored}{$_} } @COUNTERS },
                              'nothing stored (claims, entries, keyed, inflight, '
                              . 'accepted... unchanged)');
        my @bad = $t->log_lines(qr/\[(?:alert|crit|emerg)\]|Sanitizer|==\d+==ERROR/);
        Test::More::is(scalar @bad, 0, 'no [alert], [crit], [emerg] or Sanitizer line')
            or Test::More::diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    });
}

# the catalogue's count: at least 100 $what, none answered 500
sub the_count {
    my ($what) = @_;
    my ($n, $st) = @$C{qw(n status)};
    Test::More::cmp_ok($n, '>=', 100, "at least 100 $what ($n)");
    Test::More::note('answers: ' . join(', ', map { "$_ x$st->{$_}" } sort keys %$st));
    Test::More::ok(!$st->{500}, 'no hostile request was answered 500');
}

# at the end: the same nginx, a clean error.log without [crit]
sub the_end {
    my $t = $C->{t};
    Test::More::ok($t->nginx_alive && $t->nginx_pid == $C->{master},
                   'nginx still up at the end');
    Test::More::is_deeply([$t->worker_pids], $C->{workers},
                          'the same workers at the end');
    $t->check_log_clean;
    my @crit = $t->log_lines(qr/\[crit\]/);
    Test::More::is(scalar @crit, 0, 'error.log has no [crit] lines')
        or Test::More::diag(join "\n", @crit);
}

1;
