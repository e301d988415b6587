#!/usr/bin/perl

# CONTRACT 6: one forward per (org, key) across every worker of every
# node.  Two gateway nodes (each a master and two workers) share one Redis;
# 50 clients (forked processes, released together through a pipe) send the
# same request with one key, half to each node, while the backend takes
# 200 ms.  Ten rounds, a fresh key each: exactly one forward per round,
# every other answer a 409 IDEMPOTENCY_IN_PROGRESS or a replay 202, never a
# 5xx; afterwards the key replays on both nodes and another body is 422.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $ROUNDS  = 10;     # a fresh key each
my $CLIENTS = 50;     # parallel connections per burst, half on each node
my $DELAY   = 0.2;    # the backend's answer time
my $BUDGET  = 60;     # seconds for all rounds together

my ($n1, $n2) = InfTest->fleet(
    log_level => 'notice',
    zone      => 'zone=jobs:1m lease=10s',
    # what is tested is who wins a key, not Redis's speed: on a loaded
    # machine (ASan, builds beside) a reply took over the default 200ms
    redis     => 'timeout=2s',
    main      => 'worker_rlimit_nofile 1024;',
    control   => { delay => $DELAY },
);
my @PORTS = ($n1->port, $n2->port);

is(scalar(my @w1 = $n1->worker_pids), 2, 'node 1: a master and 2 workers');
is(scalar(my @w2 = $n2->worker_pids), 2, 'node 2: a master and 2 workers');

sub key_request { my ($key, $body) = @_; return $n1->idem_request($key, body => $body); }

# ---------------------------------------------------------------- rounds

my $start = Time::HiRes::time();
my ($total_409, $total_replays, %winner) = (0, 0);
my $f_start = $n1->forwards;
my $e_start = $n1->redis_calls('evalsha', 'eval');

for my $round (1 .. $ROUNDS) {
    if (Time::HiRes::time() - $start > $BUDGET) {
        fail("round $round: over the time budget of $BUDGET s");
        last;
    }

    my $key = sprintf('fleet-conc-%02d-%d-%04x', $round, $$, int rand 65536);
    my $body = qq({"prompt":"fleet round $round"});
    my $n0 = $n1->forwards;

    # one client in five sends its request after the backend's delay
    my ($ready, @a) = $n1->burst(key_request($key, $body), $CLIENTS,
                              late => 2 * $DELAY, ports => \@PORTS);

    subtest "round $round: $CLIENTS parallel requests with key $key on two nodes" => sub {
        my $c = $n1->check_burst($n0, $ready, \@a, clients => $CLIENTS,
                                 nodes => 2, wait => 2);
        my @orig = @{ $c->{original} };
        $winner{$orig[0]{node}}++ if @orig == 1;
        $total_409 += @{ $c->{busy} };
        $total_replays += @{ $c->{replays} };

        # the key is answered now: both nodes replay it, another body is 422
        if (@orig == 1) {
            for my $node ($n1, $n2) {
                check_replay($node->idem($key, body => $body), $orig[0],
                             'afterwards, node ' . ($node == $n1 ? 1 : 2) . ' replays it');
            }
            my $x = $n2->idem($key, body => '{"prompt":"other"}');
            is(($x->json || {})->{error}{code}, 'IDEMPOTENCY_KEY_REUSED',
               'another body: 422 IDEMPOTENCY_KEY_REUSED');
        }
        is($n1->forwards - $n0, 1, 'still exactly one forward for the key');
    };
}

my $elapsed = Time::HiRes::time() - $start;
note(sprintf('%d rounds in %.1f s; %d answers 409, %d replays; the original '
             . 'answered by node 1 in %d rounds, node 2 in %d',
             $ROUNDS, $elapsed, $total_409, $total_replays,
             $winner{1} // 0, $winner{2} // 0));

Time::HiRes::sleep(0.3);
is($n1->forwards - $f_start, $ROUNDS, "$ROUNDS keys, $ROUNDS forwards in all");
my $evals = $n1->redis_calls('evalsha', 'eval') - $e_start;
note("EVALSHA/EVAL calls for the $ROUNDS rounds: $evals");

for my $node ($n1, $n2) {
    my $s = $node->stats;
    my $name = $node == $n1 ? 'node 1' : 'node 2';
    is($s->{inflight}, 0, "$name: nothing left in flight");
    is($s->{redisFailures} // 0, 0, "$name: no redisFailures");
    note("$name stats: " . json_encode($s));
}

$_->check_log_clean for $n1, $n2;

done_testing;
