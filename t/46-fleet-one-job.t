#!/usr/bin/perl

# ISSUE 14 in a fleet: one key names one job, whatever Redis, the backend
# or a worker does meanwhile.  Two gateway nodes (each a master and two
# workers) share one Redis (AOF, noeviction, as the README asks); lease
# 1 s, proxy_read_timeout 2 s.  In every case below, every answer any partner got for a key shows
# one job id, and every forward the backend received for the key carries
# that one job, byte for byte.
#
#   - nginx's own 504 on node 1, then the retry on node 2: the same job,
#     sent again at once (the forward is over: no 409);
#   - a backend slower than the lease: retries on both nodes, one after
#     the other and at once, while the first forward runs: one job, and
#     node 1's late finish of it is taken;
#   - a finish Redis refuses (-OOM: CONFIG SET maxmemory during a slow
#     forward) for longer than the lease: kept in the zone, sent again by
#     the workers' timers without any traffic, until it lands; retries on
#     node 2 meanwhile are answered 503 (fail closed), after it a replay;
#   - Redis stopped during a forward, then nginx -s reload on node 1, then
#     Redis started again: the finish survives the reload (it is in the
#     zone, not in a worker) and lands; node 2 replays the job;
#   - a worker SIGKILLed mid-forward: after the lease, a retry on either
#     node sends the same job again.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $LEASE = 1;

my ($n1, $n2) = InfTest->fleet(
    log_level    => 'info',
    zone         => "zone=jobs:1m lease=${LEASE}s",
    read_timeout => '2s',
    location     => 'influencers_busy_retry_after 1s;',
);

my $seq = 0;
sub fresh { return sprintf('fleet-one-%s-%d-%d', $_[0], $$, ++$seq); }

# every 202 any partner got for a key shows one job, and the backend got
# only that job for it
sub one_job {
    my ($name, $job, @answers) = @_;
    my %ids;
    for my $r (@answers) {
        next unless $r->status == 202;
        my $j = $r->json || {};
        $ids{ $j->{jobId} // '' }++;
    }
    is(join(',', sort keys %ids), $job, "$name: every 202 shows the one job");
    my $jobs = $n1->backend_jobs;
    my @forwards = @{ $jobs->{$job} || [] };
    ok(@forwards >= 1, "$name: the backend got the job");
    my $marker = (InfTest::json_decode($forwards[0]{body} || '{}') || {})->{params}{prompt} // '';
    my @others = grep { $_ ne $job
                        && ((InfTest::json_decode($jobs->{$_}[0]{body}) || {})->{params}{prompt} // '')
                           eq $marker } keys %$jobs;
    is("@others", '', "$name: and no other job for the key");
}

# the request of $key sent now, kept in flight, once its job reached the
# backend (sent again while a node is still reconnecting to Redis and
# answers 503 at once): (socket, the job forwarded)
sub in_flight {
    my ($node, $key, $body) = @_;
    my $end = Time::HiRes::time() + 5;
    while (Time::HiRes::time() < $end) {
        my $f0 = $n1->forwards;
        my $sock = $node->idem_async($key, body => $body);
        my @fw = $n1->wait_backend_requests($f0 + 1, timeout => 2);
        my ($mine) = grep { index($_->{body}, qq("prompt":"$key")) >= 0 } @fw[$f0 .. $#fw];
        return ($sock, $mine->{h}{'idempotency-key'}[0]) if $mine;
        finish_async($sock, 1);
        Time::HiRes::sleep(0.2);
    }
    BAIL_OUT("$key was never forwarded");
}

sub wait_owed_paid {
    my ($node, $within) = @_;
    my $end = Time::HiRes::time() + $within;
    while (Time::HiRes::time() < $end) {
        return 1 if ($node->stats->{redisOwed} // -1) == 0;
        Time::HiRes::sleep(0.1);
    }
    return 0;
}

# ============================================================ nginx's 504, the retry elsewhere

{
    my $key = fresh('504');
    my $body = qq({"prompt":"$key"});
    $n1->set_backend(delay => 2.5);
    my $f0 = $n1->forwards;
    my $r1 = $n1->idem($key, body => $body);
    check_error($r1, 504, 'UPSTREAM_TIMEOUT', undef, 'node 1: the backend is slower than proxy_read_timeout: 504');
    my $job = ($n1->backend_requests)[-1]{h}{'idempotency-key'}[0];
    $n1->set_backend;
    my $t0 = Time::HiRes::time();
    my $r2 = $n2->idem($key, body => $body);
    check_resent($r2, $job, 'node 2, right after: the same job, sent again');
    cmp_ok(Time::HiRes::time() - $t0, '<', 1, '... at once: the forward was over, no 409');
    is($n1->forwards - $f0, 2, '... two forwards');
    $n1->check_job_forwards($job, '... of the one job, byte for byte', count => 2);
    check_resent($n1->idem($key, body => $body), $job, 'node 1 replays it');
    one_job('504', $job, $r2);
}

# ============================================================ a backend slower than the lease

{
    my $key = fresh('slow');
    my $body = qq({"prompt":"$key"});
    $n1->set_backend(delay => $LEASE + 0.7);
    my $f0 = $n1->forwards;
    my ($a, $job) = in_flight($n1, $key, $body);
    my $t0 = Time::HiRes::time();
    my @answers;
    push @answers, $n2->idem($key, body => $body);
    is($answers[-1]->status, 409, 'within the lease: node 2 gets 409');
    sleep_until($t0 + $LEASE + 0.2);

    # sequential retries on both nodes, then concurrent ones
    push @answers, $n2->idem_async($key, body => $body);
    Time::HiRes::sleep(0.2);
    push @answers, $n1->idem($key, body => $body), $n2->idem($key, body => $body);
    my @conc = map { $_ % 2 ? $n1->idem_async($key, body => $body)
                            : $n2->idem_async($key, body => $body) } 1 .. 6;
    my $first = finish_async($a, 10);
    $answers[1] = finish_async($answers[1], 10);
    push @answers, map { finish_async($_, 10) } @conc;
    my $j = check_new_job($first, 'node 1\'s first request, whose forward outlived its lease: 202');
    is($j->{jobId}, $job, '... its job');
    unshift @answers, $first;
    my %st;
    $st{$_->status}++ for @answers;
    note('answers: ' . join(', ', map { "$_ x$st{$_}" } sort keys %st));
    is(scalar(grep { !/^(?:202|409)$/ } keys %st), 0, 'only 202 and 409 answers');
    one_job('slower than the lease', $job, @answers);
    cmp_ok($n1->forwards - $f0, '>=', 2, 'the job was sent again after the lease');
    $n1->check_job_forwards($job, 'every forward of the key: the one job, byte for byte');
    is(($n1->stats->{redisStale} // 0), 0, 'node 1\'s late finish of the same job was taken');
    check_resent($n2->idem($key, body => $body), $job, 'afterwards node 2 replays it');
    check_resent($n1->idem($key, body => $body), $job, 'and node 1');
    $n1->set_backend;
}

# ============================================================ a finish Redis refuses

{
    my $key = fresh('oom');
    my $body = qq({"prompt":"$key"});
    $n1->set_backend(delay => 0.8);
    my $fail0 = $n1->stats->{redisFailures} // 0;
    my ($a, $job) = in_flight($n1, $key, $body);
    my $f0 = $n1->forwards - 1;
    is($n1->redis('CONFIG', 'SET', 'maxmemory', '1'), 'OK',
       'Redis refuses writes (CONFIG SET maxmemory 1, noeviction) during the forward');
    my $r1 = finish_async($a, 5);
    my $j = check_new_job($r1, 'node 1: the backend accepted: 202, though Redis refused the finish');
    is($j->{jobId}, $job, '... the job');
    my $s = $n1->stats;
    cmp_ok($s->{redisOwed}, '>=', 1, 'node 1: the finish is kept, owed to Redis');
    cmp_ok($s->{redisFailures} - $fail0, '>=', 1, 'node 1: the refusal counted');
    like(($n1->log_lines(qr/answered an error: OOM/))[-1] // '', qr/\[error\]/,
         'node 1: [error] ... answered an error: OOM');

    # longer than the lease: the old client forgot the finish by now
    my $t0 = Time::HiRes::time();
    my @answers = ($r1);
    while (Time::HiRes::time() < $t0 + $LEASE + 0.5) {
        my $r = $n2->idem($key, body => $body);
        push @answers, $r;
        Time::HiRes::sleep(0.3);
    }
    is(scalar(grep { $_->status == 202 } @answers[1 .. $#answers]), 0,
       'node 2 meanwhile: no 202 (its claim is refused too)');
    is(scalar(grep { $_->status != 503 && $_->status != 409 } @answers[1 .. $#answers]), 0,
       'node 2 meanwhile: 409 while the lease runs, then 503 UNAVAILABLE (fail closed)');
    cmp_ok(scalar(grep { $_->status == 503 } @answers[1 .. $#answers]), '>=', 1,
           '... 503 once the lease is over');

    is($n1->redis('CONFIG', 'SET', 'maxmemory', '0'), 'OK', 'Redis takes writes again');
    ok(wait_owed_paid($n1, 5), 'with no traffic, a worker\'s timer sends the finish again: it lands');
    my $s2 = $n1->stats;
    cmp_ok($s2->{redisOwedResent}, '>=', 1, 'node 1: counted as sent again from the zone');
    my $r2 = $n2->idem($key, body => $body);
    check_resent($r2, $job, 'node 2 now replays node 1\'s job');
    push @answers, $r2;
    is($n1->forwards - $f0, 1, 'one forward in all');
    one_job('a finish refused with OOM', $job, @answers);
    $n1->set_backend;
}

# ============================================================ Redis down during a forward, then a reload

{
    my $key = fresh('reload');
    my $body = qq({"prompt":"$key"});
    $n1->set_backend(delay => 0.8);
    my ($a, $job) = in_flight($n1, $key, $body);
    my $f0 = $n1->forwards - 1;
    $n1->stop_redis;
    my $r1 = finish_async($a, 5);
    my $j = check_new_job($r1, 'Redis stopped during the forward: node 1 answers 202');
    is($j->{jobId}, $job, '... the job');
    cmp_ok($n1->stats->{redisOwed}, '>=', 1, 'node 1: the finish is owed');
    ok($n1->hup, 'nginx -s reload on node 1: new workers');
    Time::HiRes::sleep(0.5);
    cmp_ok($n1->stats->{redisOwed}, '>=', 1, '... the finish still owed: it lives in the zone');
    $n1->start_redis;
    ok(wait_owed_paid($n1, 5), 'Redis back: a new worker sends the finish, it lands');

    # node 2 reconnects by itself, within its backoff (at most 1 s)
    my ($r2, @waiting);
    my $t0 = Time::HiRes::time();
    while (1) {
        $r2 = $n2->idem($key, body => $body);
        last if $r2->status != 503 || Time::HiRes::time() > $t0 + 3;
        push @waiting, $r2;
        Time::HiRes::sleep(0.2);
    }
    check_resent($r2, $job, 'node 2 replays the job');
    note(scalar(@waiting) . ' answers 503 while node 2 reconnected');
    is($n1->forwards - $f0, 1, 'one forward in all');
    one_job('Redis down and a reload', $job, $r1, $r2);
    $n1->set_backend;
    InfTest::wait_backoff_over();    # node 2's other worker too
}

# ============================================================ a worker killed mid-forward

{
    my $key = fresh('kill');
    my $body = qq({"prompt":"$key"});
    $n1->set_backend(delay => 30);
    my ($a, $job) = in_flight($n1, $key, $body);
    my $t0 = Time::HiRes::time();
    my %old = map { $_ => 1 } $n1->worker_pids;
    kill 'KILL', keys %old;
    is(scalar(my @new = $n1->new_workers(\%old, 2)), 2, 'node 1: both workers SIGKILLed, two new ones');
    finish_async($a, 1);
    $n1->set_backend;
    check_error($n2->idem($key, body => $body), 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'node 2 within the lease: 409');
    sleep_until($t0 + $LEASE + 0.3);
    my $r2 = $n2->idem($key, body => $body);
    check_resent($r2, $job, 'node 2 after the lease: the same job, sent again');
    my $r1 = $n1->idem($key, body => $body);
    check_resent($r1, $job, 'node 1 replays it');
    $n1->check_job_forwards($job, 'the killed worker\'s job and its resend, byte for byte', count => 2);
    one_job('a worker killed', $job, $r1, $r2);
}

# ============================================================ many finishes owed at once

# twelve keys on node 1's two workers, every finish refused: twelve owed
# finishes on one list, sent again by both workers' timers and paid in
# whatever order Redis's replies come; each key then shows its one job
{
    my @keys = map { fresh("many-$_") } 1 .. 12;
    $n1->set_backend(delay => 1);
    my $f0 = $n1->forwards;
    my @socks = map { $n1->idem_async($_, body => qq({"prompt":"$_"})) } @keys;
    $n1->wait_backend_requests($f0 + @keys, timeout => 5);
    is($n1->redis('CONFIG', 'SET', 'maxmemory', '1'), 'OK',
       'many: Redis refuses writes while twelve forwards run');
    my @first = map { finish_async($_, 5) } @socks;
    is(scalar(grep { $_->status == 202 } @first), 12, 'many: twelve 202s');
    cmp_ok($n1->stats->{redisOwed}, '>=', 12, 'many: twelve finishes owed');
    is($n1->redis('CONFIG', 'SET', 'maxmemory', '0'), 'OK', 'many: Redis takes writes again');
    ok(wait_owed_paid($n1, 10), 'many: every owed finish lands, none left on the list');
    my $s = $n1->stats;
    is($s->{redisOwedAbandoned} // -1, 0, 'many: none given up');
    for my $i (0 .. $#keys) {
        my $j = $first[$i]->json || {};
        my $r = $n2->idem($keys[$i], body => qq({"prompt":"$keys[$i]"}));
        check_resent($r, $j->{jobId}, "many: node 2 replays key ${i}'s job");
        one_job("many: key $i", $j->{jobId}, $first[$i], $r);
    }
    $n1->set_backend;
}

$_->check_log_clean(allow => qr/exited on signal 9/) for $n1, $n2;

done_testing;
