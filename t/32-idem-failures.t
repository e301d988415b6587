#!/usr/bin/perl

# CONTRACT 3 and 7: failures are never sticky, no key is ever stuck, and
# one key names one job.  A forward that failed for sure (the backend's
# 500, its own 504 or 404, the backend down: nothing sent, or a status
# answered) releases the key: the retry is forwarded as a new job with new
# ids.  A forward whose outcome is unknown (a connection dropped after the
# job was sent, nginx's own timeout) keeps the key's job: the retry sends
# the same job again, byte for byte, and gets the first ids.  An in-flight
# claim is a lease: a worker SIGKILLed while it holds one, or a forward
# that outlives it, does not keep the key at 409, and the next request
# sends the same job again.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t;    # the instance the helpers talk to

# ---------------------------------------------------------------- helpers

sub last_forward {
    my @r = $t->backend_requests;
    return undef unless @r;
    my $b = json_decode($r[-1]{body}) || {};
    return { job => $r[-1]{h}{'idempotency-key'}[0] // '',
             inf => $b->{influencerId} // '', rid => $r[-1]{h}{'x-request-id'}[0] };
}

# no [alert]/[emerg]/sanitizer lines but the expected ones
sub check_log_except {
    my ($expected, $name) = @_;
    $t->stop;
    my @bad = grep { /\[alert\]|\[emerg\]|Sanitizer|==\d+==ERROR/ && !/$expected/ }
              split /\n/, $t->error_log . ($t->read_file('stderr.log') // '');
    is(scalar @bad, 0, $name) or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
}

# ================================================================ failed forwards

$t = InfTest->setup(log_level => 'info', read_timeout => '1s', server => STATS_LOCATION);

# each failure: the answer, then the retry with the same key: a new job
# when the failure was certain, the same job again when it was not
my @cases = (
    [ 'backend 500', { status => 500, body => '{"error":"boom"}' },
      502, 'UPSTREAM_ERROR', 'released' ],
    [ 'backend 504 of its own', { status => 504 }, 502, 'UPSTREAM_ERROR',
      'released' ],
    [ 'backend 404', { status => 404, body => '{}' }, 404, 'NOT_FOUND',
      'released' ],
    [ 'backend drops the connection', { drop => 1 }, 502, 'UPSTREAM_ERROR',
      'kept' ],
    [ 'backend too slow (proxy_read_timeout 1s)', { delay => 2 },
      504, 'UPSTREAM_TIMEOUT', 'kept' ],
);

my ($failures, $unknown) = (0, 0);
my $k = 0;
for my $c (@cases) {
    my ($what, $control, $status, $code, $key_fate) = @$c;
    my $key = 'fail-' . ++$k;
    my $body = qq({"prompt":"case $k"});

    $t->set_backend(%$control);
    my $n0 = $t->forwards();
    my $r = $t->idem($key, body => $body);
    check_error($r, $status, $code, undef, "$what: $status $code");
    is($t->forwards(), $n0 + 1, "$what: the request was forwarded");
    my $failed = last_forward() || {};

    $t->set_backend;
    my $retry = $t->idem($key, body => $body);
    is($t->forwards(), $n0 + 2, "$what: the retry was forwarded again");
    my $now = last_forward() || {};

    if ($key_fate eq 'released') {
        $failures++;
        my $j = check_new_job($retry, "$what: the retry with the same key is accepted");
        is($now->{job}, $j->{jobId}, "$what: the retry forwarded the answered job");
        isnt($j->{jobId}, $failed->{job}, "$what: a new jobId");
        isnt($j->{influencerId}, $failed->{inf}, "$what: a new influencerId");
        isnt($now->{rid}, $failed->{rid}, "$what: a new request id");
    } else {
        $unknown++;
        my $j = check_resent($retry, $failed->{job},
                             "$what: the retry sends the same job again, accepted");
        is($j->{influencerId}, $failed->{inf}, "$what: the same influencerId");
        is($now->{job}, $failed->{job}, "$what: the same job was forwarded");
        is($now->{rid}, $failed->{rid}, "$what: with the first request's id");
        $t->check_job_forwards($failed->{job}, "$what: sent twice, byte for byte",
                               count => 2);
    }

    my $again = $t->idem($key, body => $body);
    is($again->status, 202, "$what: then the key replays");
    is($again->header('idempotent-replayed'), 'true', "$what: marked replayed");
    ok($again->body eq $retry->body, "$what: the accepted retry's body");
    is($t->forwards(), $n0 + 2, "$what: the replay is not forwarded");
}

# a released key remembers nothing: another body is not a reuse
{
    $t->set_backend(status => 500);
    my $r = $t->idem('fail-other', body => '{"gender":"male"}');
    check_error($r, 502, 'UPSTREAM_ERROR', undef, 'fail-other: 502');
    $failures++;
    $t->set_backend;
    check_new_job($t->idem('fail-other', body => '{"gender":"female"}'),
            'fail-other retried with another body: 202, not 422');
}

# the backend down, then back
{
    $t->stop_backend;
    my $n0 = $t->forwards();
    my $r = $t->idem('fail-down', body => '{"prompt":"down"}');
    check_error($r, 502, 'UPSTREAM_ERROR', undef, 'backend down: 502');
    $failures++;
    my $r2 = $t->idem('fail-down', body => '{"prompt":"down"}');
    check_error($r2, 502, 'UPSTREAM_ERROR', undef,
                'backend still down, same key: 502 again (not 409)');
    $failures++;
    $t->start_backend;
    my $j = check_new_job($t->idem('fail-down', body => '{"prompt":"down"}'),
                    'backend back, same key: 202');
    is($t->forwards(), $n0 + 1, 'backend back: forwarded');
    is((last_forward() || {})->{job}, $j->{jobId}, 'backend back: that job was forwarded');
}

# the client leaves while its request is forwarded: the forward goes on
# (proxy_ignore_client_abort), and its outcome decides (the backend's
# 0.6 s stays under this server's proxy_read_timeout of 1 s)
{
    $t->set_backend(delay => 0.6);
    my $n0 = $t->forwards();
    my ($m, $p, $h, $b, %o) = $t->create_args(body => '{"prompt":"gone"}',
        headers => ['Idempotency-Key' => 'gone-ok']);
    $t->raw($t->request($m, $p, $h, $b, %o), close_after => 0.2);
    my @fw = $t->wait_backend_requests($n0 + 1);
    is(scalar @fw, $n0 + 1, 'a client that left: its request was forwarded');
    my $job = (last_forward() || {})->{job};
    Time::HiRes::sleep(0.8);
    $t->set_backend;
    my $r = $t->idem('gone-ok', body => '{"prompt":"gone"}');
    is($r->status, 202, 'the client comes back after the backend accepted: 202');
    is($r->header('idempotent-replayed'), 'true', '... a replay');
    like($r->body, qr/"jobId":"\Q$job\E"/, '... of the job the backend accepted');
    is($t->forwards(), $n0 + 1, '... not forwarded again');

    $t->set_backend(delay => 0.6, status => 500);
    ($m, $p, $h, $b, %o) = $t->create_args(body => '{"prompt":"gone"}',
        headers => ['Idempotency-Key' => 'gone-fail']);
    $t->raw($t->request($m, $p, $h, $b, %o), close_after => 0.2);
    $t->wait_backend_requests($n0 + 2);
    my $failed_job = (last_forward() || {})->{job};
    Time::HiRes::sleep(0.8);
    $failures++;
    $t->set_backend;
    my $r2 = $t->idem('gone-fail', body => '{"prompt":"gone"}');
    my $j2 = check_new_job($r2, 'the client comes back after the backend failed: a new job');
    isnt($j2->{jobId}, $failed_job, '... with a new jobId');
    is($t->forwards(), $n0 + 3, '... forwarded');
}

{
    my $s = $t->stats();
    is($s->{releases}, $failures, "stats: $failures releases");
    is($s->{failed}, $failures, "stats: $failures failed forwards");
    is($s->{unknownOutcomes}, $unknown, "stats: $unknown outcomes unknown");
    is($s->{resends}, $unknown, "stats: $unknown jobs sent again");
    is($s->{inflight}, 0, 'stats: nothing in flight');
    is($s->{keyed}, scalar(@cases) + 4, 'stats: one entry per key that succeeded');
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ lease: a killed worker

$t = InfTest->setup(log_level => 'info', zone => 'zone=jobs:1m lease=2s',
                    read_timeout => '30s', server => STATS_LOCATION,
                    control => { delay => 60 });
{
    my $n0 = $t->forwards();
    my $sock = $t->idem_async('lease-kill', body => '{"prompt":"never"}');
    my @fw = $t->wait_backend_requests($n0 + 1);
    my $claimed = Time::HiRes::time();
    is(scalar @fw, $n0 + 1, 'the claim holder forwarded (the backend never answers)');
    my $lost_job = (last_forward() || {})->{job};

    my $busy = $t->idem('lease-kill', body => '{"prompt":"never"}');
    check_error($busy, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'while the claim is held: 409');

    # every worker is SIGKILLed, one of them holds the claim
    my %old = map { $_ => 1 } $t->worker_pids;
    is(scalar keys %old, 2, 'two workers');
    kill 'KILL', keys %old;
    my @new = $t->new_workers(\%old, 2);
    is(scalar @new, 2, 'the master started two new workers');
    my $lost = finish_async($sock, 3);
    ok(!$lost->timed_out, 'the client of the killed worker is not left hanging');
    isnt($lost->status, 202, 'the client of the killed worker got no 202');

    $t->set_backend;
    if (Time::HiRes::time() < $claimed + 1.5) {
        my $r = $t->idem('lease-kill', body => '{"prompt":"never"}');
        check_error($r, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                    'before the lease (2 s) ran out: still 409');
    } else {
        pass('(too slow to look before the lease ran out)');
    }
    is($t->forwards(), $n0 + 1, 'nothing forwarded meanwhile');

    sleep_until($claimed + 2.3);
    my $r = $t->idem('lease-kill', body => '{"prompt":"never"}');
    check_resent($r, $lost_job,
                 'after the lease ran out: the same key goes ahead, with the same job (202)');
    is($t->forwards(), $n0 + 2, 'and the job is forwarded again');
    $t->check_job_forwards($lost_job, 'the killed worker\'s job, sent again byte for byte',
                           count => 2);
    check_error($t->idem('lease-kill', body => '{"prompt":"other"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, 'then the key is an entry again: 422 on another body');

    my $s = $t->stats();
    is($s->{leaseExpiries}, 1, 'stats: one lease expiry');
    is($s->{inflight}, 0, 'stats: nothing in flight');
    is($s->{claims}, 1, 'stats: one claim');
    is($s->{resends}, 1, 'stats: one job sent again');
    is($s->{conflicts}, 2, 'stats: two conflicts (the 409s)');
}
check_log_except(qr/exited on signal 9|was locked by/,
                 'killed workers: no [alert]/[emerg] lines but their exits');
$t->cleanup;

# ================================================================ lease: a slow forward

# a lease shorter than the forward: the retry after it sends the same job
# again while the first forward still runs; both forwards are accepted,
# every answer shows the one job
$t = InfTest->setup(log_level => 'info', zone => 'zone=jobs:1m lease=1s',
                    read_timeout => '5s', server => STATS_LOCATION,
                    control => { delay => 2.5 });
{
    my $n0 = $t->forwards();
    my $body = '{"prompt":"slow"}';
    my $a = $t->idem_async('lease-slow', body => $body);
    my @fw = $t->wait_backend_requests($n0 + 1);
    my $t0 = Time::HiRes::time();
    is(scalar @fw, $n0 + 1, 'the first request is forwarded');

    my $first_job = (last_forward() || {})->{job};

    sleep_until($t0 + 1.2);
    my $b = $t->idem_async('lease-slow', body => $body);
    @fw = $t->wait_backend_requests($n0 + 2, timeout => 1.5);
    is(scalar @fw, $n0 + 2,
       'after the lease (1 s) ran out, the same request is forwarded too');
    ok(Time::HiRes::time() < $t0 + 2.5, '... while the first forward is still running');
    is((last_forward() || {})->{job}, $first_job, '... as the same job');

    my $ra = finish_async($a, 8);
    my $rb = finish_async($b, 8);
    my $ja = check_new_job($ra, 'the first request: 202');
    my $jb = check_resent($rb, $ja->{jobId}, 'the second request: 202, the same job');
    ok($ra->body eq $rb->body, 'both answers: the same envelope');
    $t->check_job_forwards($first_job, 'the job, sent twice, byte for byte', count => 2);

    my $c = $t->idem('lease-slow', body => $body);
    is($c->status, 202, 'a third request: 202');
    is($c->header('idempotent-replayed'), 'true', '... a replay');
    ok($c->body eq $ra->body, '... of the one job')
        or diag("replay: " . $c->body . "\nfirst: " . $ra->body);
    is($t->forwards(), $n0 + 2, 'two forwards in all');

    my $s = $t->stats();
    is($s->{leaseExpiries}, 1, 'stats: exactly one lease expiry');
    is($s->{resends}, 1, 'stats: the job sent again once');
    is($s->{inflight}, 0, 'stats: nothing in flight');
    is($s->{keyed}, 1, 'stats: one entry');
}
$t->check_log_clean;

done_testing;
