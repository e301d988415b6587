#!/usr/bin/perl

# CONTRACT 3 and 6: failures in a fleet.  Two gateway nodes share one Redis
# (command timeout 200 ms, the default; lease 2 s).
#
#   - a node SIGKILLed (master and workers) while its forward is held at
#     the backend leaves no stuck key: once the lease has run out the
#     other node takes the key over (and not before), and sends the key's
#     job again, the same job (ISSUE 14: one key, one job);
#   - Redis stopped: keyed requests get 503 UNAVAILABLE with Retry-After
#     within the command timeout (each answer under timeout + 0.3 s),
#     counted (redisFailures) and logged at [error] at most once a minute
#     per worker; requests without a key, and replays a node has cached,
#     are still served; Redis started again on the same port (its data and
#     scripts gone): 202 again within ~3 s, without reloading nginx;
#   - Redis frozen (SIGSTOP): every keyed request is answered 503 within
#     the timeout, none hangs, also a second batch while it is still
#     frozen; SIGCONT: 202 again, and a key answered 503 while Redis was
#     frozen is not stuck (a claim applied late lives for the lease).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $LEASE   = 2;
my $TIMEOUT = 0.2;              # influencers_redis timeout (the default)
my $SLACK   = 0.3;              # scheduling slack on top of it
my $BOUND   = $TIMEOUT + $SLACK;
my $ERR_RE  = qr/\[error\].*(?i:redis)/;

my ($n1, $n2) = InfTest->fleet(
    log_level    => 'info',
    zone         => "zone=jobs:1m lease=${LEASE}s",
    read_timeout => '6s',
    location     => 'influencers_busy_retry_after 1s;',
);
my %NAME = ($n1 => 'node 1', $n2 => 'node 2');

sub name { return $NAME{$_[0]}; }

my $seq = 0;
sub fresh { return sprintf('fleet-fail-%s-%d-%d', $_[0], $$, ++$seq); }

# one request, timed: (response, seconds)
sub timed {
    my ($node, $key, %o) = @_;
    my $t0 = Time::HiRes::time();
    my $r = $node->idem($key, timeout => 5, %o);
    return ($r, Time::HiRes::time() - $t0);
}

# requests sent all at once ([node, key], ...), each answer read as it
# comes: ([response, seconds since the send], ...) in the order given
sub parallel {
    my (@reqs) = @_;
    my (@socks, %idx);
    my $t0 = Time::HiRes::time();
    for my $i (0 .. $#reqs) {
        my ($node, $key) = @{ $reqs[$i] };
        my $sock = $node->send_async($node->idem_request($key), $node->port);
        push @socks, $sock;
        $idx{fileno $sock} = $i;
    }
    my @out;
    my %buf;
    my $sel = IO::Select->new(@socks);
    my $end = $t0 + 5;
    while ($sel->count && (my $left = $end - Time::HiRes::time()) > 0) {
        for my $s ($sel->can_read($left)) {
            my $i = $idx{fileno $s};
            my $n = sysread($s, $buf{$i}, 65536, length($buf{$i} // ''));
            next if !defined $n && $!{EINTR};
            next if $n;
            $out[$i] = [ InfTest::Response->parse($buf{$i} // ''),
                         Time::HiRes::time() - $t0 ];
            $sel->remove($s);
            close $s;
        }
    }
    for my $s ($sel->handles) {
        my $i = $idx{fileno $s};
        my $r = InfTest::Response->parse($buf{$i} // '');
        $r->{timed_out} = 1;
        $out[$i] = [ $r, Time::HiRes::time() - $t0 ];
        close $s;
    }
    return @out;
}

# polls (bounded) until a new key is accepted on $node: seconds, or undef
sub until_accepted {
    my ($node, $within) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < $within) {
        my $r = $node->idem(fresh('recover'), timeout => 2);
        return Time::HiRes::time() - $t0 if $r->status == 202;
        Time::HiRes::sleep(0.1);
    }
    return undef;
}

sub unavailable {
    my ($r, $name) = @_;
    check_error($r, 503, 'UNAVAILABLE', undef, $name);
    like($r->header('retry-after') // '', qr/^[1-9]\d*$/, "$name: with Retry-After");
}

# ============================================================ a node dies mid-forward

{
    my $body = '{"prompt":"fleet crash"}';
    my $f0 = $n1->forwards;
    $n1->set_backend(delay => 5);
    my $sock = $n1->idem_async('fleet-crash-1', body => $body);
    my @fw = $n1->wait_backend_requests($f0 + 1);
    my $t_claim = Time::HiRes::time();
    my $job1 = $fw[-1]{h}{'idempotency-key'}[0] // '';
    like($job1, qr/^job_/, 'node 1 forwards fleet-crash-1 (the backend holds it)');

    ok($n1->kill9, 'node 1: master and workers SIGKILLed mid-forward');
    close $sock;
    $n1->set_backend(delay => 0);

    my ($ok, $when, %seen);
    my $r = $n2->idem('fleet-crash-1', body => $body);
    if (Time::HiRes::time() - $t_claim < $LEASE - 0.5) {
        check_error($r, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                    'node 2, within the lease: 409 (the claim of the dead node)');
    } elsif ($r->status == 202) {
        # a slow kill: the lease had run out already, this one went ahead
        $seen{202}++;
        $ok = $r;
        $when = Time::HiRes::time() - $t_claim;
    }

    while (!$ok && Time::HiRes::time() < $t_claim + $LEASE + 3) {
        $r = $n2->idem('fleet-crash-1', body => $body);
        $seen{$r->status}++;
        if ($r->status == 202) {
            $ok = $r;
            $when = Time::HiRes::time() - $t_claim;
            last;
        }
        Time::HiRes::sleep(0.1);
    }
    note('node 2 answers while polling: ' . join(', ', map { "$_ x$seen{$_}" } sort keys %seen));
    ok($ok, 'node 2: once the lease has run out, the key goes ahead (202)')
        or diag(join ', ', map { "$_ x$seen{$_}" } sort keys %seen);
    if ($ok) {
        my $j = check_resent($ok, $job1, 'node 2: the dead node\'s job, sent again',
                             retry_after => 5);
        cmp_ok($when, '>=', $LEASE - 0.3, sprintf('... not before the lease (after %.2f s)', $when));
        cmp_ok($when, '<=', $LEASE + 1.5, sprintf('... soon after it (%.2f s, lease %d s)', $when, $LEASE));
        is(scalar(grep { !/^(?:202|409)$/ } keys %seen), 0, 'meanwhile only 409s');
        is($n1->forwards - $f0, 2, 'two forwards: the dead node\'s and node 2\'s');
        $n1->check_job_forwards($job1, 'both of the one job, byte for byte', count => 2);
        check_replay($n2->idem('fleet-crash-1', body => $body), $ok, 'node 2 replays it');

        $n1->run;
        my $e0 = $n1->redis_calls('evalsha', 'eval');
        check_replay($n1->idem('fleet-crash-1', body => $body), $ok,
                     'node 1, started again: replays node 2\'s job (from Redis)');
        is($n1->redis_calls('evalsha', 'eval') - $e0, 1, '... in one round trip');
    }
}

# ============================================================ a forward that outlives its lease

# The lease is shorter than this forward: node 2 takes the key over
# meanwhile and sends the key's job again.  Node 1's late finish of that
# same job is accepted too, and every answer for the key, on either node,
# shows the one job.
{
    my $body = '{"prompt":"fleet stale"}';
    my $f0 = $n1->forwards;
    my $stale0 = $n1->stats->{redisStale} // 0;
    $n1->set_backend(delay => $LEASE + 1.5);
    my $sock = $n1->idem_async('fleet-stale-1', body => $body);
    my @fw = $n1->wait_backend_requests($f0 + 1);
    my $job1 = $fw[-1]{h}{'idempotency-key'}[0] // '';
    my $t_claim = Time::HiRes::time();
    $n1->set_backend(delay => 0);
    Time::HiRes::sleep($LEASE + 0.3);
    my $r2 = $n2->idem('fleet-stale-1', body => $body);
    check_resent($r2, $job1, 'node 2, after the lease of node 1\'s slow forward: the same job, sent again');
    my $r1 = finish_async($sock, 10);
    my $j1 = check_new_job($r1, 'node 1\'s partner, whose forward outlived its lease: 202');
    is($j1->{jobId}, $job1, '... the same job');
    ok($r1->body eq $r2->body, '... the same envelope on both nodes');
    my $stale = ($n1->stats->{redisStale} // 0) - $stale0;
    is($stale, 0, 'node 1: its late finish of the same job was taken (no redisStale)');
    my $a1 = $n1->idem('fleet-stale-1', body => $body);
    my $a2 = $n2->idem('fleet-stale-1', body => $body);
    check_replay($a2, $r2, 'node 2 replays the job');
    check_replay($a1, $r1, 'node 1 replays the job');
    is($n1->forwards - $f0, 2, 'two forwards (the lease ran out)');
    $n1->check_job_forwards($job1, 'both of the one job, byte for byte', count => 2);
}

# ============================================================ Redis stopped

my ($cached, $cached_body) = (undef, '{"prompt":"cached before the outage"}');
{
    $cached = $n1->idem('fleet-cached-1', body => $cached_body);
    check_new_job($cached, 'node 1: fleet-cached-1 accepted while Redis is up');
    is($n2->idem(fresh('up'))->status, 202, 'node 2: a key accepted while Redis is up');

    my @w1 = $n1->worker_pids;
    my @w2 = $n2->worker_pids;
    my %err0 = map { $_ => $_->count_log($ERR_RE) } $n1, $n2;
    my %st0 = map { $_ => ($_->stats->{redisFailures} // 0) } $n1, $n2;

    $n1->stop_redis;
    ok(!$n1->redis_pid, 'Redis stopped');

    my ($slow, %count) = (0);
    my $first;
    for my $i (1 .. 20) {
        my $node = $i % 2 ? $n1 : $n2;
        my ($r, $sec) = timed($node, fresh('down'));
        $first //= $r;
        $count{$node}++ if $r->status == 503
                        && (($r->json || {})->{error}{code} // '') eq 'UNAVAILABLE';
        $slow++ if $sec > $BOUND;
    }
    unavailable($first, 'Redis stopped: a new key on node 1: 503 UNAVAILABLE');
    is($count{$n1}, 10, 'node 1: 10 new keys, 10 answers 503 UNAVAILABLE');
    is($count{$n2}, 10, 'node 2: 10 new keys, 10 answers 503 UNAVAILABLE');
    is($slow, 0, "each within the command timeout ($BOUND s)");

    is($n1->create(body => '{}')->status, 202, 'node 1: a request without a key: 202');
    is($n2->create(body => '{}')->status, 202, 'node 2: a request without a key: 202');
    check_replay($n1->idem('fleet-cached-1', body => $cached_body), $cached,
                 'node 1: a replay it has cached is served without Redis');
    unavailable($n2->idem('fleet-cached-1', body => $cached_body),
                'node 2, which has not cached it: 503 UNAVAILABLE');

    for my $n ($n1, $n2) {
        my $s = $n->stats;
        cmp_ok(($s->{redisFailures} // 0) - $st0{$n}, '>=', 10,
               name($n) . ': redisFailures counts the failures');
    }

    # many more failures: still at most one [error] line a minute per worker
    timed($_ % 2 ? $n1 : $n2, fresh('down-more')) for 1 .. 20;
    for my $n ($n1, $n2) {
        my $lines = $n->count_log($ERR_RE) - $err0{$n};
        cmp_ok($lines, '>=', 1, name($n) . ': Redis unreachable is logged at [error]');
        cmp_ok($lines, '<=', 2, name($n) . ": ... at most once per worker (2 workers): $lines lines");
        note(name($n) . ': ' . (($n->log_lines($ERR_RE))[-1] // ''));
    }

    # a longer outage, so that the reconnect backoff reaches its ceiling
    my $t_long = Time::HiRes::time();
    while (Time::HiRes::time() - $t_long < 3) {
        timed($n1, fresh('down-long'));
        timed($n2, fresh('down-long'));
        Time::HiRes::sleep(0.1);
    }

    # started again on the same port: no reload needed
    $n1->start_redis;
    my $s1 = until_accepted($n1, 3);
    my $s2 = until_accepted($n2, 3);
    ok(defined $s1, sprintf('Redis started again: node 1 accepts new keys (after %.2f s)', $s1 // -1));
    ok(defined $s2, sprintf('Redis started again: node 2 accepts new keys (after %.2f s)', $s2 // -1));
    cmp_ok($s1 // 9, '<=', 1.5, '... within the backoff ceiling (1 s) + slack');
    is_deeply([$n1->worker_pids], \@w1, 'node 1: the same workers (no reload, no restart)');
    is_deeply([$n2->worker_pids], \@w2, 'node 2: the same workers');

    # Redis lost its scripts too: a fresh key still costs claim + finish
    my $e0 = $n1->redis_calls('evalsha', 'eval');
    is($n1->idem(fresh('after-restart'))->status, 202, 'a new key after the restart: 202');
    my $e1 = $n1->redis_calls('evalsha', 'eval');
    is($e1 - $e0, 2, '... in two round trips');
    check_replay($n1->idem('fleet-cached-1', body => $cached_body), $cached,
                 'node 1 still replays fleet-cached-1 from its zone');
}

# ============================================================ Redis frozen

{
    InfTest::wait_backoff_over();    # node 2's other worker too

    is($n1->idem(fresh('pre-freeze'))->status, 202, 'node 1 works before the freeze');
    is($n2->idem(fresh('pre-freeze'))->status, 202, 'node 2 works before the freeze');

    $n1->freeze_redis;
    my $t_freeze = Time::HiRes::time();

    my @keys = map { fresh('frozen') } 1 .. 10;
    my @a = parallel(map { [ $_ % 2 ? $n1 : $n2, $keys[$_] ] } 0 .. 9);
    is(scalar(grep { $_->[0]{timed_out} } @a), 0, 'Redis frozen: 10 parallel keyed requests, none hangs');
    is(scalar(grep { $_->[0]->status == 503
                     && (($_->[0]->json || {})->{error}{code} // '') eq 'UNAVAILABLE' } @a),
       10, '... each answered 503 UNAVAILABLE')
        or diag(join "\n", map { sprintf '%.3f s %s', $_->[1], $_->[0]->summary } @a);
    my ($max) = sort { $b <=> $a } map { $_->[1] } @a;
    cmp_ok($max, '<=', $BOUND, sprintf("... within the timeout + slack (%.3f s, bound %.1f s)",
                                       $max, $BOUND));
    unavailable($a[0][0], 'Redis frozen: 503 UNAVAILABLE');

    # still frozen: the nodes reconnect or wait; a second batch no slower
    Time::HiRes::sleep(0.3);
    my @b = parallel(map { [ $_ % 2 ? $n2 : $n1, fresh('frozen2') ] } 0 .. 9);
    my ($max2) = sort { $b <=> $a } map { $_->[1] } @b;
    is(scalar(grep { $_->[0]->status == 503 } @b), 10,
       'still frozen: a second batch of 10, each 503');
    cmp_ok($max2, '<=', $BOUND, sprintf('... within the timeout + slack (%.3f s)', $max2));
    my ($r, $sec) = timed($n1, undef);
    is($r->status, 202, 'still frozen: a request without a key: 202');
    cmp_ok($sec, '<', 0.5, '... at once');

    $n1->thaw_redis;
    my $frozen_for = Time::HiRes::time() - $t_freeze;
    note(sprintf('Redis was frozen for %.2f s', $frozen_for));
    my $s1 = until_accepted($n1, 3);
    my $s2 = until_accepted($n2, 3);
    ok(defined $s1, sprintf('SIGCONT: node 1 accepts new keys (after %.2f s)', $s1 // -1));
    ok(defined $s2, sprintf('SIGCONT: node 2 accepts new keys (after %.2f s)', $s2 // -1));
    InfTest::wait_backoff_over();    # and the other workers

    # a key answered 503 while Redis was frozen: its claim may have been
    # applied when Redis woke up; it must not stay stuck past the lease
    my ($ok, %seen);
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() - $t0 < $LEASE + 2) {
        my $r = $n2->idem($keys[0]);
        $seen{$r->status}++;
        if ($r->status == 202) { $ok = $r; last; }
        Time::HiRes::sleep(0.1);
    }
    note('a key answered 503 during the freeze, retried after SIGCONT: '
         . join(', ', map { "$_ x$seen{$_}" } sort keys %seen));
    ok($ok, "a key answered 503 during the freeze is accepted after SIGCONT within the lease + 2 s");
    is(scalar(grep { !/^(?:202|409)$/ } keys %seen), 0, '... meanwhile only 409s');
}

# ============================================================ a connect that hangs

# A Redis address whose connects never complete (a listener whose accept
# queue is full: the kernel drops the SYNs): no request waits longer than
# the command timeout, even while the connection is being made (the
# connect_timeout, 500 ms by default, is longer).
SKIP: {
    my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                     Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or skip "cannot listen: $!", 4;
    my $port = $hole->sockport;
    my @fill;
    for (1 .. 8) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Blocking => 0) or last;
        push @fill, $c;
    }
    Time::HiRes::sleep(0.2);
    # is a new connect stuck now?
    my $probe = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => 0.5);
    skip 'the kernel still completes connects to a full listener', 4 if $probe;

    my $n3 = $n1->peer;
    $n3->write_directory;
    $n3->conf($n3->default_conf(server => STATS_LOCATION,
        redis => "zone=jobs 127.0.0.1:$port connect_timeout=2s"));
    $n3->run;
    my ($max, $ok) = (0, 0);
    for my $i (1 .. 6) {
        my ($r, $sec) = timed($n3, fresh('hole'));
        $max = $sec if $sec > $max;
        $ok++ if $r->status == 503 && (($r->json || {})->{error}{code} // '') eq 'UNAVAILABLE';
        Time::HiRes::sleep(0.1);
    }
    is($ok, 6, 'a Redis whose connect hangs (connect_timeout=2s): 6 keyed requests, each 503 UNAVAILABLE');
    cmp_ok($max, '<=', $BOUND, sprintf('... each within the command timeout + slack (slowest %.3f s)', $max));
    my ($r, $sec) = timed($n3, undef);
    is($r->status, 202, '... a request without a key: 202');
    cmp_ok($sec, '<', 0.5, '... at once');
    $n3->stop;
    close $_ for @fill;
    close $hole;
}

# ============================================================ a finish lost on the way

# A relay between a third node and Redis that, on demand, swallows what the
# node sends: the claim gets through, the node's finish never reaches
# Redis (its reply times out).  The partner was told 202 with an
# Idempotency-Expires a day away: once the claim's lease has run out,
# another node must still not make a second job of the key.

# relay(listen port, Redis port, control file): a forked process, by PID;
# the control file holds "pass" or "swallow"
sub relay {
    my ($rport, $control) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "relay: $!";
    my $port = $l->sockport;
    my $owner = $$;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        $SIG{PIPE} = 'IGNORE';
        my $sel = IO::Select->new($l);
        my %peer;
        while (getppid() == $owner) {
            for my $h ($sel->can_read(0.2)) {
                if ($h == $l) {
                    my $c = $l->accept or next;
                    my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                        PeerPort => $rport, Proto => 'tcp') or do { close $c; next; };
                    $peer{$c} = [$r, 1];
                    $peer{$r} = [$c, 0];
                    $sel->add($c, $r);
                    next;
                }
                my $n = sysread($h, my $buf, 65536);
                my ($other, $from_node) = @{ $peer{$h} || [] };
                if (!$n) {
                    $sel->remove($h, $other);
                    delete @peer{$h, $other};
                    close $h; close $other if $other;
                    next;
                }
                my $mode = do { open my $f, '<', $control; local $/; <$f> } // 'pass';
                next if $from_node && $mode =~ /swallow/;
                syswrite($other, $buf);
            }
        }
        POSIX::_exit(0);
    }
    close $l;
    return ($pid, $port);
}

{
    my $control = $n1->path('relay.control');
    $n1->write_file($control, 'pass');
    my ($rpid, $rport) = relay($n1->redis_port, $control);
    my $n3 = $n1->peer;
    $n3->write_directory;
    $n3->conf($n3->default_conf(server => STATS_LOCATION,
        zone  => "zone=jobs:1m lease=${LEASE}s", read_timeout => '6s',
        redis => "zone=jobs 127.0.0.1:$rport"));
    $n3->run;

    is($n3->idem(fresh('relay'))->status, 202, 'a node behind the relay works');

    my $body = '{"prompt":"fleet lost finish"}';
    my $f0 = $n1->forwards;
    $n1->set_backend(delay => 1);
    my $sock = $n3->idem_async('fleet-lost-finish', body => $body);
    $n1->wait_backend_requests($f0 + 1);
    $n1->write_file($control, 'swallow');
    my $r1 = finish_async($sock, 10);
    $n1->set_backend(delay => 0);
    note('the partner whose finish was swallowed got: ' . $r1->summary);
    Time::HiRes::sleep(0.3);
    $n1->write_file($control, 'pass');

    Time::HiRes::sleep($LEASE + 0.5);
    my $r2 = $n2->idem('fleet-lost-finish', body => $body);
    if ($r1->status == 202) {
        ok($r2->status == 202 && $r2->body eq $r1->body,
           'a finish lost on the way: after the lease, another node replays the job '
           . 'its partner was told of (no second job)')
            or diag("told:    " . $r1->summary . "\nnode 2:  " . $r2->summary);
        is($n1->forwards - $f0, 1, '... forwarded once')
            or diag('forwards: ' . ($n1->forwards - $f0));
    } else {
        isnt($r1->status, 202, 'a finish lost on the way: the partner was not told 202');
    }
    $n3->stop;
    kill 'TERM', $rpid;
    waitpid $rpid, 0;
}

# ============================================================ counters and logs

for my $n ($n1, $n2) {
    my $s = $n->stats;
    note(name($n) . ' stats: ' . json_encode($s));
    cmp_ok($s->{redisFailures} // 0, '>=', 20, name($n) . ': redisFailures >= 20');
    is($s->{redisFallbacks} // 0, 0, name($n) . ': no redisFallbacks (on_error=503)');
    is($s->{inflight}, 0, name($n) . ': nothing left in flight');
}

$_->check_log_clean for $n1, $n2;

done_testing;
