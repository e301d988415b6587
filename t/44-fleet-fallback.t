#!/usr/bin/perl

# CONTRACT 6: with on_error=local, a node whose Redis is unreachable (or
# frozen) falls back to its own zone instead of failing closed.  Requests
# with a key are accepted (202) from the local zone, replays and 422s work
# within the node, redisFallbacks counts it and a log line says so (a
# partner may then get a duplicate across nodes: that is what the log and
# the metric are for).  When Redis is back, new keys go through Redis
# again.  A node on the same Redis without on_error=local still answers
# 503 meanwhile.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $BOUND = 0.2 + 0.3;
# the line that says a node fell back (README: a [warn] once a minute);
# its wording is free, so: a [warn] about Redis, or words of a fallback
my $LOG_RE = qr/\[warn\].*Redis|\[(?:error|warn)\].*(?i:fall(?:ing|s)? ?back|local zone|zone alone|on_error)/;

my ($n1, $n2) = InfTest->fleet(
    log_level => 'info',
    zone      => 'zone=jobs:1m lease=2s',
    redis     => 'timeout=200ms on_error=local',
);
# a node of the default on_error=503 on the same Redis, for comparison
my $n3 = $n1->peer;
$n3->write_directory;
$n3->conf($n3->default_conf(server => STATS_LOCATION,
                            redis => 'zone=jobs 127.0.0.1:%%REDIS_PORT%%'));
$n3->run;

my $seq = 0;
sub fresh { return sprintf('fleet-fb-%s-%d-%d', $_[0], $$, ++$seq); }

# while Redis is up: fleet semantics, no fallback
{
    my $r = $n1->idem('fleet-fb-up');
    check_new_job($r, 'on_error=local, Redis up: a new key: 202');
    check_replay($n2->idem('fleet-fb-up'), $r, '... replayed by the other node (through Redis)');
    is($n1->stats->{redisFallbacks} // -1, 0, 'no redisFallbacks while Redis is up');
}

sub outage {
    my ($how, $first_outage) = @_;
    my $f0 = $n1->forwards;
    my $fb0 = $n1->stats->{redisFallbacks} // 0;
    my $log0 = $n1->count_log($LOG_RE);

    my ($slow, $ok) = (0, 0);
    my $first;
    for my $i (1 .. 6) {
        my $t0 = Time::HiRes::time();
        my $r = $n1->idem(fresh($how));
        $slow++ if Time::HiRes::time() - $t0 > $BOUND;
        $first //= $r;
        $ok++ if $r->status == 202 && !defined $r->header('idempotent-replayed');
    }
    is($ok, 6, "Redis $how, on_error=local: 6 new keys accepted (202) from the local zone")
        or diag($first->summary);
    is($slow, 0, "... each within the timeout + slack ($BOUND s)");
    is($n1->forwards - $f0, 6, '... and forwarded');

    my $key = fresh("$how-local");
    my $a = $n1->idem($key, body => '{"prompt":"fallback"}');
    check_new_job($a, "Redis $how: a key accepted locally");
    check_replay($n1->idem($key, body => '{"prompt":"fallback"}'), $a,
                 '... replays on the same node');
    check_error($n1->idem($key, body => '{"prompt":"other"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, '... another body: 422 on the same node');

    cmp_ok(($n1->stats->{redisFallbacks} // 0) - $fb0, '>=', 7,
           "redisFallbacks counts the requests served from the zone alone");
    if ($first_outage) {
        cmp_ok($n1->count_log($LOG_RE) - $log0, '>=', 1, 'a log line says the node fell back')
            or diag(join "\n", grep { /redis/i } split /\n/, $n1->error_log);
    }
    # once a minute per worker: both outages fall in one minute here
    cmp_ok($n1->count_log($LOG_RE), '<=', 2,
           'the fallback line is logged at most once a minute per worker (2 workers)');
    note(($n1->log_lines($LOG_RE))[-1] // '(no line)');

    my $c = $n3->idem(fresh("$how-503"));
    check_error($c, 503, 'UNAVAILABLE', undef,
                'meanwhile a node without on_error=local answers 503 UNAVAILABLE');
    return ($key, $a);
}

# Redis stopped
my ($local_key, $local_first) = do {
    $n1->stop_redis;
    outage('stopped', 1);
};
$n1->start_redis;
{
    my ($ok, $t0) = (0, Time::HiRes::time());
    while (Time::HiRes::time() - $t0 < 3) {
        my $e0 = $n1->redis_calls('evalsha', 'eval');
        my $r = $n1->idem(fresh('back'));
        if ($r->status == 202 && $n1->redis_calls('evalsha', 'eval') > $e0) { $ok = 1; last; }
        Time::HiRes::sleep(0.1);
    }
    ok($ok, 'Redis started again: new keys go through Redis again (within 3 s)');
    check_replay($n1->idem($local_key, body => '{"prompt":"fallback"}'), $local_first,
                 'a key accepted during the outage still replays on its node');
    # node 2 never saw it, and Redis does not know it: node 2 would create a
    # second job (the documented cost of on_error=local); not asserted.
}

# Redis frozen
$n1->freeze_redis;
outage('frozen', 0);
$n1->thaw_redis;

for my $n ($n1, $n2, $n3) {
    note('stats: ' . json_encode($n->stats));
}
$_->check_log_clean for $n1, $n2, $n3;

done_testing;
