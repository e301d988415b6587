#!/usr/bin/perl

# ISSUE 17: fleet mode on a Sentinel group.  A primary, two replicas and
# three sentinels (t/lib/RedisTopo.pm), a password on the data nodes and
# another on the sentinels; two gateway nodes (each a master and two
# workers) with
#     influencers_redis zone=jobs sentinel=S1,S2,S3 master=mymaster
#                       password=.. sentinel_password=.. timeout=500ms;
# lease 1 s, proxy_read_timeout 2 s, no wait= (asynchronous replication).
#
#   - a keyed accept on node 1 is replayed by node 2 (the same jobId); the
#     gateway nodes hold connections on the master, and one subscription
#     (+switch-master) on a sentinel;
#   - AUTH to the sentinels: a node without sentinel_password= and one
#     with a wrong one answer keyed requests 503 UNAVAILABLE (unkeyed ones
#     202) and log an [error] that names the sentinel and says it refused
#     (NOAUTH/WRONGPASS: AUTH);
#     no password appears in any log;
#   - SENTINEL FAILOVER during a load (t/lib/Drill.pm's clients, paced:
#     new keys, each retried on both nodes in turn until a 202 or the
#     drill's end, then once more on the other node): the gateway nodes
#     leave the old master within 3 s of the sentinels' switch
#     (+switch-master, before the old master is turned into a replica);
#     no failure later than 3 s after the switch; the twenty keys accepted
#     before the failover (and replicated) replay on both nodes with their
#     jobId, and so do the drill's keys outside the event's window (below);
#   - then, once the group has settled, the new master SIGKILLed during a
#     load (the sentinels promote a replica after down-after, 1 s): the
#     keys accepted before (replicated: the twenty, and every key of the
#     failover drill that replayed after it) still replay, and so do the
#     kill drill's keys outside its window;
#   - nginx -t refuses sentinel= without master=, master= without
#     sentinel=, sentinel= with an address, and bad sentinel addresses
#     (no port, port abc, port 70000, an empty list, an empty entry);
#     accepts good sentinel= master= lines without connecting to the
#     sentinels.
#
# For each drill, per key: the distinct job ids partners saw, the jobs the
# backend received (it dedupes on the forward's Idempotency-Key), the 5xx
# answers, the recovery time (from the event to the first 202 after the
# last failure) and the time to the first 202 after the switch; printed
# as "RESULT sentinel ..." lines.  Every key with a 202 must have its job
# at the backend, and every key is accepted in the end.  After each drill
# every key of it with a 202 is sent once more: "RESULT sentinel ...: N of
# M keys replay their job after it, K lost".
#
# What is NOT failed on: without wait= a write is acknowledged by the
# master alone, and Sentinel's failover is not coordinated: SENTINEL
# FAILOVER promotes a replica (REPLICAOF NO ONE) while the old master keeps
# taking writes until the gateway nodes leave it, and a killed master
# takes its last unreplicated writes along.  So a key whose requests began
# within 1 s of the event (ev0 - 1 s .. ev1 + 1 s) may lose its claim and
# get a second job: such losses are counted and printed (diag), not
# failed.  Keys whose requests all began outside that window must show one
# job, exactly one at the backend, and replay after the event.  t/55 makes
# this strict for every key with wait=1.
#
# The old master left running by SENTINEL FAILOVER would be turned into a
# replica by the sentinels some 10 s later (+convert-to-slave); the test
# does it at once (REPLICAOF), after checking that the gateway nodes have
# left it, so that the kill drill has two replicas to choose from.
#
# About 25 s (the group starts in 2.5 s, each drill lasts 7-8 s).
# DRILL_CLIENTS (6) sets the drills' clients.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use File::Find ();
use InfTest qw(:all);
use RedisTopo qw(start_sentinel_group);
use SentinelDrill ();

my $missing = RedisTopo::tools_missing();
plan skip_all => $missing if $missing;
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $T0 = Time::HiRes::time();
my $LEASE = 1;
my $CLIENTS = $ENV{DRILL_CLIENTS} // 6;
my $PW    = "S3nt-data-$$-pw";
my $SPW   = "S3nt-sent-$$-pw";
my $WRONG = "S3nt-wrong-$$-pw";

# the first $n of a list, for diag()
sub head { my ($n, @l) = @_; return @l > $n ? @l[0 .. $n - 1] : @l; }

sub elapsed { return sprintf '%.1f s', Time::HiRes::time() - $_[0]; }

my $h = InfTest->new;
my $g = start_sentinel_group($h, replicas => 2, sentinels => 3,
    master_name => 'mymaster', password => $PW, sentinel_password => $SPW,
    down_after_ms => 1000, timeout => 20);
my $S = join ',', $g->sentinel_addrs;
my @SPORTS = map { SentinelDrill::port_of($_) } $g->sentinel_addrs;
note 'sentinel group (1 + 2 replicas, 3 sentinels) up in ' . elapsed($T0)
     . ", sentinels $S, master " . $g->master_addr;

my ($n1, $n2) = InfTest->fleet(
    log_level    => 'warn',
    zone         => "zone=jobs:4m lease=${LEASE}s org_share=100%",
    read_timeout => '2s',
    workers      => 2,
    main         => 'worker_rlimit_nofile 2048;',
    address      => "sentinel=$S master=mymaster",
    redis        => "password=$PW sentinel_password=$SPW timeout=500ms",
);
my @NODES = ($n1, $n2);
my @PORTS = ($n1->port, $n2->port);

my $seq = 0;
sub fresh { return sprintf('sent-%s-%d-%d', $_[0], $$, ++$seq); }

# a keyed request until it is not a 503 (a node connecting), bounded
sub settle_idem {
    my ($node, $key, $within) = @_;
    my $end = Time::HiRes::time() + ($within // 5);
    my $r;
    do {
        $r = $node->idem($key, body => qq({"prompt":"$key"}));
        return $r if $r->status != 503;
        Time::HiRes::sleep(0.2);
    } while (Time::HiRes::time() < $end);
    return $r;
}

# ------------------------------------------------------------ one job, two nodes

my $m0 = $g->master_addr;
{
    my $key = fresh('basic');
    my $r1 = $n1->idem($key, body => qq({"prompt":"$key"}));
    my $j = check_new_job($r1, 'node 1: a new key through the sentinels: 202');
    diag(join "\n", grep { /\[(?:error|warn)\]/ } split /\n/, $n1->error_log)
        if $r1->status != 202;
    my $r2 = $n2->idem($key, body => qq({"prompt":"$key"}));
    check_replay($r2, $r1, 'node 2 replays it (same jobId, byte for byte)');
    is(($r2->json || {})->{jobId}, $j->{jobId}, '... the same jobId');
    my $jobs = $n1->backend_jobs;
    is(scalar @{ $jobs->{ $j->{jobId} // '' } || [] }, 1, '... one forward of the job');
    cmp_ok(SentinelDrill::module_clients($g, SentinelDrill::port_of($m0)), '>=', 2,
           'the gateway nodes hold connections on the master ' . $m0);
    my $subs = 0;
    for my $p (@SPORTS) {
        my $l = $g->command($p, 'CLIENT', 'LIST');
        next if !defined $l || ref $l;
        $subs += grep { /\b(?:sub|psub)=[1-9]/ } split /\n/, $l;
    }
    cmp_ok($subs, '>=', 1, "a subscription on the sentinels (+switch-master): $subs");
}

# ------------------------------------------------------------ AUTH to the sentinels

sub node {
    my ($args) = @_;
    my $n = $n1->peer;
    $n->write_directory;
    $n->conf($n->default_conf(server => STATS_LOCATION,
        redis => "zone=jobs sentinel=$S master=mymaster $args"));
    $n->run;
    push @NODES, $n;
    return $n;
}

# the [error] lines that name a sentinel (by the word or its port)
sub sentinel_error_lines {
    my ($n) = @_;
    my $ports = join '|', @SPORTS;
    return grep { /\[error\]/ && (/sentinel/i || /:(?:$ports)\b/) }
           split /\n/, $n->error_log;
}

for my $case (['no sentinel_password=', "password=$PW"],
              ['a wrong sentinel_password=', "password=$PW sentinel_password=$WRONG"]) {
    my ($name, $args) = @$case;
    my $n = node("$args timeout=500ms");
    my $t0 = Time::HiRes::time();
    my $r = $n->idem(fresh('auth'));
    my $sec = Time::HiRes::time() - $t0;
    check_error($r, 503, 'UNAVAILABLE', undef, "$name: a keyed request: 503 UNAVAILABLE");
    cmp_ok($sec, '<', 2, sprintf('%s: ... answered within 2 s (%.3f s)', $name, $sec));
    my $r2 = $n->idem(fresh('auth'));
    is($r2->status, 503, "$name: the next keyed request too");
    is($n->create(body => '{}')->status, 202, "$name: a request without a key: 202");
    my $end = Time::HiRes::time() + 2;
    my @l;
    Time::HiRes::sleep(0.1) until (@l = sentinel_error_lines($n)) || Time::HiRes::time() > $end;
    cmp_ok(scalar @l, '>=', 1, "$name: an [error] line names the sentinel")
        or diag(join "\n", grep { /\[(?:error|warn|crit)\]/ } split /\n/, $n->error_log);
    # an operator who forgot or mistyped sentinel_password= is told so
    is(scalar(grep { /AUTH/ } @l), scalar(@l),
       "$name: ... and says the sentinel refused for want of the password (NOAUTH/AUTH)")
        or diag(join "\n", @l);
    note("$name: " . ($l[0] // ''));
    is(scalar(grep { index($_, $WRONG) >= 0 || index($_, $SPW) >= 0 } split /\n/, $n->error_log),
       0, "$name: no password in its error.log");
    $n->check_log_clean;
}

# ------------------------------------------------------------ keys written before the events

my %before;
for my $i (1 .. 20) {
    my $key = fresh('before');
    my $r = settle_idem($i % 2 ? $n1 : $n2, $key);
    $before{$key} = ($r->json || {})->{jobId} if $r->status == 202;
}
is(scalar keys %before, 20, 'twenty keys accepted before the failover');
my ($ok, $why) = SentinelDrill::settled($g, replicas => 2, timeout => 5);
ok($ok, 'and replicated to both replicas') or diag($why);

# ------------------------------------------------------------ drills

sub wait_owed_paid {
    my ($within) = @_;
    my $end = Time::HiRes::time() + $within;
    while (Time::HiRes::time() < $end) {
        return 1 if !grep { ($_->stats->{redisOwed} // -1) != 0 } $n1, $n2;
        Time::HiRes::sleep(0.1);
    }
    return 0;
}

sub report {
    my ($name, $d) = @_;
    is(scalar @{ $d->{errors} }, 0, "$name: every client ended by itself")
        or diag(join "\n", @{ $d->{errors} });
    ok(!$d->{event_error}, "$name: the event happened") or diag($d->{event_error});
    my $c = $d->counts($n1, margin => 1);
    my ($all, $calm, $win) = @$c{qw(all calm window)};
    is($all->{accepted}, $all->{keys}, "$name: every key accepted in the end ($all->{keys})");
    is($all->{no_backend}, 0, "$name: every key with a 202 has its job at the backend");
    is($calm->{multi_ids}, 0, "$name: keys outside the event's window: one job id each ($calm->{keys} keys)");
    is($calm->{backend_multi}, 0, "$name: ... and at most one job at the backend");
    is($calm->{foreign}, 0, "$name: ... the job the partners saw");
    diag("$name: $_") for head(10, @{ $calm->{problems} });
    my $lost = $win->{multi_ids} + $win->{backend_multi};
    diag(sprintf('RESULT sentinel %s: %d keys (%d in the event\'s window), %d requests, '
                 . '%d x 202, job ids per key max %d, second jobs: %d outside the window, '
                 . '%d within it (asynchronous replication, no wait=), %d x 5xx (%d after the '
                 . 'event began), %d broken, %d open at the end, event %.2f s, recovery %s s, '
                 . 'outage %.2f s, first 202 after the switch +%s s',
                 $name, $all->{keys}, $win->{keys}, $c->{requests}, $c->{answers202},
                 $all->{ids_max}, $calm->{multi_ids} + $calm->{backend_multi},
                 $lost, $c->{e5xx}, $c->{e5xx_event}, $c->{broken}, scalar @{ $d->{open} },
                 $d->{ev1} - $d->{ev0},
                 defined $c->{recovery} ? sprintf('%.2f', $c->{recovery}) : 'never',
                 $c->{outage},
                 defined $c->{after_switch} ? sprintf('%.2f', $c->{after_switch}) : 'never'));
    diag("$name: in the window: $_") for head(4, @{ $win->{problems} });
    ok(defined $c->{recovery}, "$name: a 202 after the event");
    ok(!defined $c->{last_bad} || $c->{last_bad} < $d->{ev1} + 3,
       "$name: no failure later than 3 s after the sentinels switched")
        or diag(sprintf('last failure %.2f s after the switch', $c->{last_bad} - $d->{ev1}));
    cmp_ok($all->{keys}, '>=', 20, "$name: the drill made keys");
    return $c;
}

# the keys of a drill whose requests all began outside its window, with
# their one job
sub calm_jobs {
    my ($d, $margin) = @_;
    my $job = $d->job_of_keys;
    my ($w0, $w1) = ($d->{ev0} - $margin, $d->{ev1} + $margin);
    my %calm;
    for my $key (keys %$job) {
        next if grep { !$_->{later} && $_->{t} >= $w0 && $_->{t} <= $w1 }
                @{ $d->{keys}{$key} };
        $calm{$key} = $job->{$key};
    }
    return \%calm;
}

# --- SENTINEL FAILOVER

my ($left_after, $old, $new);
my $d1 = SentinelDrill->run($n1, ports => \@PORTS, nodes => [$n1, $n2],
    name => 'failover', clients => $CLIENTS, seconds => 7, event_at => 2,
    lease => $LEASE,
    event => sub { $old = $g->master_addr; return $g->failover(timeout => 20); },
    after => sub {
        # the gateway nodes leave the old master (still a master: the
        # sentinels convert it some 10 s later)
        my $t0 = Time::HiRes::time();
        my $n;
        do {
            $n = SentinelDrill::module_clients($g, SentinelDrill::port_of($old));
            return Time::HiRes::time() - $t0 if $n == 0;
            Time::HiRes::sleep(0.05);
        } while (Time::HiRes::time() < $t0 + 3);
        return undef;
    });
($new) = @{ $d1->{event} };
($left_after) = @{ $d1->{after} || [] };
note(sprintf 'SENTINEL FAILOVER: %s -> %s, the sentinels agreed in %.2f s',
     $old // '?', $new // '?', $d1->{ev1} - $d1->{ev0});
ok(defined $left_after, 'the gateway nodes left the old master within 3 s of the switch')
    and note(sprintf '... in %.2f s', $left_after);
report('failover', $d1);

($ok, $why) = SentinelDrill::make_replica($g, $old, $new);
ok($ok, 'the old master made a replica of the new one') or diag($why);
ok(wait_owed_paid(5), 'nothing owed to Redis');
($ok, $why) = SentinelDrill::settled($g, replicas => 2, timeout => 10);
ok($ok, 'the group settled: two replicas caught up') or diag($why);

my %before_kill;
{
    my $r = SentinelDrill::replays($n2, \%before);
    is($r->{ok}, scalar keys %before, 'after the failover: node 2 replays every key accepted before it')
        or diag(join "\n", @{ $r->{bad} });
    $r = SentinelDrill::replays($n1, \%before);
    is($r->{ok}, scalar keys %before, '... and node 1') or diag(join "\n", @{ $r->{bad} });
    my $calm = calm_jobs($d1, 1);
    $r = SentinelDrill::replays($n2, $calm);
    is($r->{ok}, scalar keys %$calm, 'the drill\'s keys outside the window replay with their job ('
       . scalar(keys %$calm) . ')') or diag(join "\n", head(10, @{ $r->{bad} }));
    my $all = $d1->job_of_keys;
    $r = SentinelDrill::replays($n1, $all);
    diag(sprintf 'RESULT sentinel failover: %d of %d keys replay their job after it, %d lost '
         . '(within the window, no wait=)', $r->{ok}, scalar keys %$all, scalar @{ $r->{bad} });
    note("lost: $_") for @{ $r->{bad} };
    # every key that replayed its job now (and is replicated before the
    # kill): must survive the kill
    %before_kill = (%before, %{ $r->{good} });
}

($ok, $why) = SentinelDrill::settled($g, replicas => 2, timeout => 5);
ok($ok, 'the keys so far are on both replicas') or diag($why);

# --- the master killed

my $d2 = SentinelDrill->run($n1, ports => \@PORTS, nodes => [$n1, $n2],
    name => 'kill', clients => $CLIENTS, seconds => 8, event_at => 2,
    lease => $LEASE,
    event => sub { $old = $g->master_addr; return $g->kill_master(timeout => 20); });
($new) = @{ $d2->{event} };
note(sprintf 'master %s killed: %s took over, the sentinels agreed in %.2f s',
     $old // '?', $new // '?', $d2->{ev1} - $d2->{ev0});
report('kill', $d2);
ok(wait_owed_paid(5), 'nothing owed to Redis');
{
    my $r = SentinelDrill::replays($n2, \%before);
    is($r->{ok}, scalar keys %before, 'after the kill: the keys accepted before the events replay')
        or diag(join "\n", @{ $r->{bad} });
    my %rest = %before_kill;
    delete @rest{ keys %before };
    $r = SentinelDrill::replays($n1, \%rest);
    is($r->{ok}, scalar keys %rest, 'and the failover drill\'s keys ('
       . scalar(keys %rest) . ')') or diag(join "\n", head(10, @{ $r->{bad} }));
    my $calm = calm_jobs($d2, 1);
    $r = SentinelDrill::replays($n2, $calm);
    is($r->{ok}, scalar keys %$calm, 'the kill drill\'s keys outside the window ('
       . scalar(keys %$calm) . ')') or diag(join "\n", head(10, @{ $r->{bad} }));
    my $all = $d2->job_of_keys;
    $r = SentinelDrill::replays($n1, $all);
    diag(sprintf 'RESULT sentinel kill: %d of %d keys replay their job after it, %d lost '
         . '(within the window, no wait=)', $r->{ok}, scalar keys %$all, scalar @{ $r->{bad} });
    note("lost: $_") for @{ $r->{bad} };
}

# ------------------------------------------------------------ nginx -t

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
    my $refused = sub {
        my ($name, $what, $args) = @_;
        my ($rc, $msg) = $try->($args);
        subtest "nginx -t: $name" => sub {
            isnt($rc, 0, 'nginx -t fails');
            like($msg, qr/\[emerg\]/, 'with an [emerg]');
            like($msg, $what, 'that says what is wrong') or diag($msg);
            like($msg, qr{ in \S+nginx\.conf:\d+}, 'naming the file and line');
        };
        note("$name: $msg");
    };
    # the connections each sentinel has taken so far (the harness's own
    # INFO included: one more each time it asks)
    my $conns = sub {
        return [ map { (SentinelDrill::info($g, $_, 'stats')->{total_connections_received}
                        // 'none') } @SPORTS ];
    };
    my $c0 = $conns->();
    my ($rc, $msg) = $try->("zone=jobs sentinel=$S master=mymaster sentinel_password=$SPW");
    is($rc, 0, 'nginx -t accepts sentinel=S1,S2,S3 master=mymaster') or diag($msg);
    my $c1 = $conns->();
    is_deeply([ map { $c1->[$_] - $c0->[$_] } 0 .. $#$c0 ], [ (1) x @SPORTS ],
              '... without connecting to the sentinels');
    ($rc, $msg) = $try->('zone=jobs sentinel=127.0.0.1:26379 master=mymaster wait=1');
    is($rc, 0, 'nginx -t accepts one sentinel, with wait=1') or diag($msg);

    $refused->('sentinel= without master=', qr/master/,
               'zone=jobs sentinel=127.0.0.1:26379,127.0.0.1:26380');
    $refused->('master= without sentinel=', qr/sentinel|master|address/,
               'zone=jobs master=mymaster');
    $refused->('master= with an address, without sentinel=', qr/sentinel|master/,
               'zone=jobs 127.0.0.1:6379 master=mymaster');
    $refused->('sentinel= together with an address', qr/sentinel|address/,
               'zone=jobs 127.0.0.1:6379 sentinel=127.0.0.1:26379 master=mymaster');
    $refused->('a sentinel address without a port', qr/sentinel|127\.0\.0\.1|port|address/,
               'zone=jobs sentinel=127.0.0.1 master=mymaster');
    $refused->('a sentinel port that is not a number', qr/sentinel|abc|port|address/,
               'zone=jobs sentinel=127.0.0.1:abc master=mymaster');
    $refused->('a sentinel port 70000', qr/sentinel|70000|port|address/,
               'zone=jobs sentinel=127.0.0.1:26379,127.0.0.1:70000 master=mymaster');
    $refused->('an empty sentinel= list', qr/sentinel/,
               'zone=jobs sentinel= master=mymaster');
    $refused->('an empty entry in the sentinel= list', qr/sentinel|address/,
               'zone=jobs sentinel=127.0.0.1:26379,,127.0.0.1:26380 master=mymaster');
    $c->check_log_clean(allow_emerg => 1);
}

# ------------------------------------------------------------ no password in any log

{
    $_->stop for @NODES;
    my @files;
    for my $n (@NODES) {
        File::Find::find({ no_chdir => 1, wanted => sub {
            push @files, $_ if -f $_ && $_ !~ m{/(?:nginx\.conf|directory\.json)$}
                               && $_ !~ m{/redis-data/};
        } }, $n->dir);
    }
    my @leaks;
    for my $f (@files) {
        my $text = $n1->read_file($f) // '';
        push @leaks, map { "$f: $_" } grep { index($text, $_) >= 0 } $PW, $SPW, $WRONG;
    }
    is(scalar @leaks, 0, 'no password in any log of the gateway nodes ('
       . scalar(@files) . ' files)') or diag(join "\n", @leaks);
}

$_->check_log_clean for $n1, $n2;
note('t/54 took ' . elapsed($T0));

done_testing;
