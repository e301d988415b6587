#!/usr/bin/perl

# ISSUE 17: influencers_redis wait=N (WAIT N after every claim and every
# finish; a claim fewer than N replicas acknowledged is answered 503
# UNAVAILABLE and its key released; such a finish stays owed and is sent
# again).  A Sentinel group of a primary, one replica and three sentinels
# (t/lib/RedisTopo.pm, no passwords); two gateway nodes (each a master and
# two workers) with
#     influencers_redis zone=jobs sentinel=S1,S2,S3 master=mymaster
#                       wait=1 timeout=1s;
# lease 2 s, proxy_read_timeout 2 s; a third node with wait=0 beside them.
#
#   (a) wait=1: a keyed accept on node 1 (202), replayed by node 2 with the
#       same jobId; Redis counts WAIT calls for it (claim and finish), and
#       none for a keyed accept of the wait=0 node;
#   (d) the latency of a keyed accept with wait=0 and with wait=1: the
#       median (and 90th percentile) of 50 each, interleaved, printed as a
#       "RESULT wait latency" line; not bounded;
#   (b) SENTINEL FAILOVER while a load runs (t/lib/Drill.pm's clients: new
#       keys, each retried on both nodes in turn until a 202 or the
#       drill's end, then once more on the other node): zero second jobs.
#       Every key shows partners one job id; the backend (which dedupes on
#       the forward's Idempotency-Key) received exactly one job for every
#       key with a 202 and none for the others; every key accepted before
#       or during the failover replays its jobId on both nodes after it.
#       With one replica and wait=1 no acknowledged claim can be lost: the
#       old master, left running, has no replica once the other one is
#       promoted, so its WAIT 1 fails (503, the key released).  Printed as
#       "RESULT wait failover": keys, 202s, 5xx, recovery time;
#   (c) wait=2 with only one replica: keyed requests answered 503
#       UNAVAILABLE (never 202, never forwarded), their keys released in
#       Redis; after a reload to wait=1 the same key is accepted at once
#       (it is never 409 for longer than the lease);
#   (e) nginx -t refuses wait=-1, wait=17 and wait=abc with an [emerg] that
#       names wait (with an address and with sentinel=), and accepts wait=0
#       and wait=16;
#   (f) (after (d)) a finish the replica does not acknowledge (SIGSTOP of
#       the replica while the backend holds a keyed request, its claim
#       acknowledged): the partner gets its 202, the finish stays owed
#       while the replica is stopped, is sent again once it is back
#       (redisOwedResent) and lands; node 2 then replays the one job.
#
# The old master left running by SENTINEL FAILOVER would be turned into a
# replica by the sentinels some 10 s later (+convert-to-slave); meanwhile
# the new master has no replica and every wait=1 claim is refused.  The
# test does it at once (REPLICAOF), after checking that the gateway nodes
# have left the old master within 3 s of the sentinels' switch.
#
# About 20 s (the group starts in 2.5 s, the drill lasts 9 s).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use RedisTopo qw(start_sentinel_group);
use FaultLoad ();
use SentinelDrill ();

my $missing = RedisTopo::tools_missing();
plan skip_all => $missing if $missing;
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $T0 = Time::HiRes::time();
my $LEASE = 2;
my $CLIENTS = $ENV{DRILL_CLIENTS} // 6;
my $ZONE = "zone=jobs:4m lease=${LEASE}s org_share=100%";

# the first $n of a list, for diag()
sub head { my ($n, @l) = @_; return @l > $n ? @l[0 .. $n - 1] : @l; }

sub elapsed { return sprintf '%.1f s', Time::HiRes::time() - $_[0]; }

my $h = InfTest->new;
my $g = start_sentinel_group($h, replicas => 1, sentinels => 3,
    master_name => 'mymaster', down_after_ms => 1000, timeout => 20);
my $S = join ',', $g->sentinel_addrs;
note 'sentinel group (1 + 1 replica, 3 sentinels) up in ' . elapsed($T0)
     . ", sentinels $S, master " . $g->master_addr;

my ($n1, $n2) = InfTest->fleet(
    log_level    => 'warn',
    zone         => $ZONE,
    read_timeout => '2s',
    workers      => 2,
    main         => 'worker_rlimit_nofile 2048;',
    address      => "sentinel=$S master=mymaster",
    redis        => 'wait=1 timeout=1s',
);
my @NODES = ($n1, $n2);

# another gateway node on the same group and backend
sub node {
    my ($args) = @_;
    my $n = $n1->peer;
    $n->write_directory;
    $n->conf(node_conf($n, $args));
    $n->run;
    push @NODES, $n;
    return $n;
}

sub node_conf {
    my ($n, $args) = @_;
    return $n->default_conf(server => STATS_LOCATION, zone => $ZONE,
        read_timeout => '2s',
        redis => "zone=jobs sentinel=$S master=mymaster $args");
}

my $n0 = node('wait=0 timeout=1s');

my $seq = 0;
sub fresh { return sprintf('wait-%s-%d-%d', $_[0], $$, ++$seq); }
sub body { return qq({"prompt":"$_[0]"}); }
sub master_port { return SentinelDrill::port_of($g->master_addr); }

my %before;    # key => job, accepted before the failover

# ------------------------------------------------------------ (a) wait=1

{
    my $key = fresh('a');
    my $w0 = SentinelDrill::calls($g, master_port(), 'wait');
    my $r1 = $n1->idem($key, body => body($key));
    my $j = check_new_job($r1, 'wait=1: node 1, a new key: 202');
    diag(join "\n", grep { /\[(?:error|warn)\]/ } split /\n/, $n1->error_log)
        if $r1->status != 202;
    my $end = Time::HiRes::time() + 2;
    my $w;
    Time::HiRes::sleep(0.05)
        while ($w = SentinelDrill::calls($g, master_port(), 'wait') - $w0) < 2
              && Time::HiRes::time() < $end;
    cmp_ok($w, '>=', 2, "wait=1: Redis got WAIT after the claim and after the finish ($w)");
    my $r2 = $n2->idem($key, body => body($key));
    check_replay($r2, $r1, 'wait=1: node 2 replays it');
    is(($r2->json || {})->{jobId}, $j->{jobId}, '... the same jobId');
    $before{$key} = $j->{jobId};

    my $k0 = fresh('a0');
    my $r0 = $n0->idem($k0, body => body($k0));    # connects, first
    my $w1 = SentinelDrill::calls($g, master_port(), 'wait');
    $k0 = fresh('a0');
    $r0 = $n0->idem($k0, body => body($k0));
    check_new_job($r0, 'wait=0: a new key: 202');
    Time::HiRes::sleep(0.3);
    is(SentinelDrill::calls($g, master_port(), 'wait') - $w1, 0, 'wait=0: no WAIT sent');
    $before{$k0} = ($r0->json || {})->{jobId};
}

# ------------------------------------------------------------ (d) latency

{
    my (%lat, %fail);
    for my $i (1 .. 50) {
        for my $case ([0, $n0], [1, $n1]) {
            my ($w, $node) = @$case;
            my $key = fresh("lat$w");
            my $t0 = Time::HiRes::time();
            my $r = $node->idem($key, body => body($key));
            push @{ $lat{$w} }, Time::HiRes::time() - $t0;
            if ($r->status == 202) {
                $before{$key} = ($r->json || {})->{jobId};
            } else {
                $fail{$w}++;
            }
        }
    }
    my %q;
    for my $w (0, 1) {
        my @s = sort { $a <=> $b } @{ $lat{$w} };
        $q{$w} = [ map { 1000 * $s[int($_ * $#s)] } 0.5, 0.9 ];
    }
    is(($fail{0} // 0) + ($fail{1} // 0), 0, 'latency: 100 keyed accepts, all 202');
    diag(sprintf 'RESULT wait latency: keyed accept (claim, forward, finish): wait=0 median '
         . '%.2f ms, p90 %.2f ms; wait=1 median %.2f ms, p90 %.2f ms (50 each, one replica)',
         @{ $q{0} }, @{ $q{1} });
}

# ------------------------------------------------------------ (f) a finish the replica does not hold

sub wait_owed_paid {
    my ($within, @nodes) = @_;
    my $end = Time::HiRes::time() + $within;
    while (Time::HiRes::time() < $end) {
        return 1 if !grep { ($_->stats->{redisOwed} // -1) != 0 } @nodes;
        Time::HiRes::sleep(0.1);
    }
    return 0;
}

{
    my $key = fresh('f');
    my ($replica) = grep { $_->{kind} eq 'data' && $_->{alive}
                           && $_->{port} != master_port() } @{ $g->nodes };
    $n1->set_backend(delay => 1);
    my $f0 = $n1->forwards;
    my $resent0 = $n1->stats->{redisOwedResent} // 0;
    my $sock = $n1->idem_async($key, body => body($key));
    my @fw = $n1->wait_backend_requests($f0 + 1, timeout => 5);
    my $job = @fw > $f0 ? $fw[-1]{h}{'idempotency-key'}[0] : undef;
    ok(defined $job, '(f) a keyed request forwarded (its claim acknowledged by the replica)');
    # the replica stops acknowledging: the finish's WAIT 1 times out
    kill 'STOP', $replica->{pid};
    my $r1 = finish_async($sock, 6);
    my $owed = $n1->stats->{redisOwed} // -1;
    my $t0 = Time::HiRes::time();
    Time::HiRes::sleep(0.5);
    my $owed2 = $n1->stats->{redisOwed} // -1;
    kill 'CONT', $replica->{pid};
    $n1->set_backend;
    my $j = check_new_job($r1, '(f) the replica stopped: the backend accepted: 202');
    is($j->{jobId}, $job, '(f) ... the forwarded job');
    cmp_ok($owed, '>=', 1, '(f) the finish the replica did not acknowledge is owed');
    cmp_ok($owed2, '>=', 1, '(f) ... and still owed while the replica is stopped');
    ok(wait_owed_paid(5, $n1), '(f) the replica back: the finish is sent again and lands');
    cmp_ok(($n1->stats->{redisOwedResent} // 0) - $resent0, '>=', 1, '(f) ... counted as sent again');
    my $r2 = $n2->idem($key, body => body($key));
    is(($r2->json || {})->{jobId}, $job, '(f) node 2 then answers the same job');
    is($r2->header('idempotent-replayed'), 'true', '(f) ... as a replay');
    is(scalar @{ $n1->backend_jobs->{ $job // '' } || [] }, 1, '(f) one forward of the job');
    $before{$key} = $job if defined $job;
}

my ($ok, $why) = SentinelDrill::settled($g, replicas => 1, timeout => 5);
ok($ok, 'the keys so far are on the replica') or diag($why);

# ------------------------------------------------------------ (b) a failover under load

{
    my ($old, $left);
    my $d = SentinelDrill->run($n1, ports => [$n1->port, $n2->port], nodes => [$n1, $n2],
        name => 'waitfo', clients => $CLIENTS, seconds => 9, event_at => 2,
        lease => $LEASE,
        event => sub { $old = $g->master_addr; return $g->failover(timeout => 20); },
        after => sub {
            my ($new) = @_;
            my $t0 = Time::HiRes::time();
            while (Time::HiRes::time() < $t0 + 3) {
                if (SentinelDrill::module_clients($g, SentinelDrill::port_of($old)) == 0) {
                    $left = Time::HiRes::time() - $t0;
                    last;
                }
                Time::HiRes::sleep(0.05);
            }
            my @r = SentinelDrill::make_replica($g, $old, $new);
            return (Time::HiRes::time() - $t0, @r);
        });
    my ($new) = @{ $d->{event} };
    my ($conv, $conv_ok, $conv_why) = @{ $d->{after} || [] };
    note(sprintf 'SENTINEL FAILOVER: %s -> %s, the sentinels agreed in %.2f s',
         $old // '?', $new // '?', $d->{ev1} - $d->{ev0});
    ok(!$d->{event_error}, 'failover: it happened') or diag($d->{event_error});
    ok(defined $left, 'failover: the gateway nodes left the old master within 3 s of the switch')
        and note(sprintf '... in %.2f s', $left);
    ok($conv_ok, 'failover: the old master made a replica of the new one, during the load')
        or diag($conv_why // $d->{after_error} // '?');
    is(scalar @{ $d->{errors} }, 0, 'failover: every client ended by itself')
        or diag(join "\n", @{ $d->{errors} });

    my $c = $d->counts($n1, margin => 1);
    my $all = $c->{all};
    is($all->{accepted}, $all->{keys}, "failover: every key accepted in the end ($all->{keys})");
    is($all->{ids_max}, 1, 'failover: partners saw one job id per key');
    is($all->{multi_ids}, 0, 'failover: no key with two job ids');
    is($all->{backend_max}, 1, 'failover: the backend got at most one job per key');
    is($all->{no_backend}, 0, 'failover: every key with a 202 has its job at the backend');
    is($all->{foreign}, 0, 'failover: the job partners saw is the one the backend got');
    is(scalar @{ $all->{problems} }, 0, 'failover: zero second jobs')
        or diag(join "\n", head(10, @{ $all->{problems} }));
    # keys that never got a 202 never reached the backend
    my $jobs = FaultLoad::jobs_by_marker($n1);
    my $job = $d->job_of_keys;
    my @unanswered = grep { !$job->{$_} && $jobs->{$_} } keys %{ $d->{keys} };
    is(scalar @unanswered, 0, 'failover: no job at the backend for a key never accepted')
        or diag(join(" ", head(10, @unanswered)));
    diag(sprintf('RESULT wait failover: wait=1, one replica: %d keys, %d requests, %d x 202, '
                 . 'job ids per key max %d, backend jobs per key max %d, %d second jobs, '
                 . '%d x 5xx (%d after the event began), %d broken, %d open at the end, '
                 . 'sentinels switched in %.2f s, old master a replica %s s after the switch, '
                 . 'recovery %s s, outage %.2f s, first 202 after the switch +%s s',
                 $all->{keys}, $c->{requests}, $c->{answers202}, $all->{ids_max},
                 $all->{backend_max}, $all->{multi_ids} + $all->{backend_multi},
                 $c->{e5xx}, $c->{e5xx_event}, $c->{broken}, scalar @{ $d->{open} },
                 $d->{ev1} - $d->{ev0}, defined $conv ? sprintf('%.2f', $conv) : '?',
                 defined $c->{recovery} ? sprintf('%.2f', $c->{recovery}) : 'never',
                 $c->{outage},
                 defined $c->{after_switch} ? sprintf('%.2f', $c->{after_switch}) : 'never'));
    cmp_ok($all->{keys}, '>=', 20, 'failover: the drill made keys');

    ok(wait_owed_paid(6, $n1, $n2), 'failover: every owed finish landed');
    ($ok, $why) = SentinelDrill::settled($g, replicas => 1, timeout => 5);
    ok($ok, 'failover: the group settled') or diag($why);
    for my $case (['node 2', $n2], ['node 1', $n1]) {
        my ($name, $node) = @$case;
        my $r = SentinelDrill::replays($node, $job);
        is($r->{ok}, scalar keys %$job, "failover: $name replays every key of the drill with its job ("
           . scalar(keys %$job) . ')')
            or diag(join "\n", head(10, @{ $r->{bad} }));
    }
    my $r = SentinelDrill::replays($n2, \%before);
    is($r->{ok}, scalar keys %before, 'failover: and every key accepted before it ('
       . scalar(keys %before) . ')')
        or diag(join "\n", head(10, @{ $r->{bad} }));
}

# ------------------------------------------------------------ (c) wait=2, one replica

sub prefixed_keys {
    my ($prefix) = @_;
    my ($cursor, $guard, %k) = (0, 0);
    do {
        my $r = $g->command(master_port(), 'SCAN', $cursor, 'MATCH', "$prefix:*",
                            'COUNT', 1000);
        return -1 if ref $r ne 'ARRAY';
        $cursor = $r->[0];
        $k{$_} = 1 for @{ $r->[1] };
    } while ($cursor ne '0' && ++$guard < 1000);
    return scalar keys %k;
}

{
    my $n3 = node('wait=2 timeout=1s prefix=waitc');
    my @keys = map { fresh('c') } 1 .. 3;
    my $f0 = $n1->forwards;
    my ($first, $t503);
    my @st;
    for my $key (@keys) {
        my $t0 = Time::HiRes::time();
        my $r = $n3->idem($key, body => body($key));
        $t503 = Time::HiRes::time();
        push @st, sprintf('%d in %.2f s', $r->status, $t503 - $t0);
        $first //= $r;
    }
    check_error($first, 503, 'UNAVAILABLE', undef,
                'wait=2 with one replica: a keyed request: 503 UNAVAILABLE');
    like($first->header('retry-after') // '', qr/^[1-9]\d*$/, '... with Retry-After');
    is(scalar(grep { !/^503 / } @st), 0, 'wait=2: every keyed request 503 (' . join(', ', @st) . ')');
    is(scalar(grep { / in (\d+\.\d+) s/ && $1 >= 3 } @st), 0, '... each within 3 s');
    is($n1->forwards - $f0, 0, 'wait=2: none forwarded to the backend');
    is($n3->create(body => '{}')->status, 202, 'wait=2: a request without a key: 202');
    my $end = Time::HiRes::time() + 1.5;
    my $left;
    Time::HiRes::sleep(0.1) while ($left = prefixed_keys('waitc')) != 0
                                  && Time::HiRes::time() < $end;
    is($left, 0, 'wait=2: the refused claims released their keys in Redis (none under waitc:)');

    ok($n3->reload(conf => node_conf($n3, 'wait=1 timeout=1s prefix=waitc')),
       'reload with wait=1');
    my ($r, %seen);
    my $until = Time::HiRes::time() + $LEASE + 1.5;
    do {
        $r = $n3->idem($keys[0], body => body($keys[0]));
        $seen{ $r->status }++;
        last if $r->status == 202;
        Time::HiRes::sleep(0.2);
    } while (Time::HiRes::time() < $until);
    my $after = Time::HiRes::time() - $t503;
    is($r->status, 202, 'wait=1 after the reload: the same key is accepted')
        or diag($r->summary);
    cmp_ok($after, '<', $LEASE + 0.5,
           sprintf('... %.2f s after its 503, within the lease (%d s)', $after, $LEASE));
    is($seen{409} // 0, 0, '... never 409: its key was released, not left to its lease')
        or diag('answers: ' . join ', ', map { "$_ x$seen{$_}" } sort keys %seen);
    check_new_job($n3->idem($keys[1], body => body($keys[1])), 'wait=1: another refused key: a new job');
    $n3->check_log_clean;
}

# ------------------------------------------------------------ (e) nginx -t

{
    my $c = InfTest->new(log_level => 'info');
    $c->write_directory;
    my $try = sub {
        my ($args) = @_;
        $c->conf($c->default_conf(redis => $args));
        my ($rc, $out) = $c->test_config;
        my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
        return ($rc, $emerg // $out);
    };
    for my $args ('zone=jobs 127.0.0.1:6379 wait=0', 'zone=jobs 127.0.0.1:6379 wait=16',
                  "zone=jobs sentinel=$S master=mymaster wait=2") {
        my ($rc, $msg) = $try->($args);
        is($rc, 0, "nginx -t accepts: influencers_redis $args") or diag($msg);
    }
    for my $bad ('-1', '17', 'abc') {
        for my $addr ('127.0.0.1:6379', "sentinel=$S master=mymaster") {
            my ($rc, $msg) = $try->("zone=jobs $addr wait=$bad");
            subtest "nginx -t: wait=$bad ($addr)" => sub {
                isnt($rc, 0, 'nginx -t fails');
                like($msg, qr/\[emerg\]/, 'with an [emerg]');
                like($msg, qr/wait/, 'that names wait') or diag($msg);
                like($msg, qr{ in \S+nginx\.conf:\d+}, 'naming the file and line');
            };
            note("wait=$bad: $msg");
        }
    }
    $c->check_log_clean(allow_emerg => 1);
}

$_->check_log_clean for $n1, $n2, $n0;
note('t/55 took ' . elapsed($T0));

done_testing;
