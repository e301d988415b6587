#!/usr/bin/perl

# CONTRACT 3: across all worker processes, exactly one request per
# (org, key) is forwarded while its entry lives; the claim is one atomic
# step.  Many clients (forked processes, released together through a pipe)
# send the same request with one key to four workers, while the backend
# takes 200 ms: one forward, every other answer a 409 or a replay.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $ROUNDS  = 10;     # a fresh key each
my $CLIENTS = 50;     # parallel connections per burst
my $WORKERS = 4;
my $DELAY   = 0.2;    # the backend's answer time
my $BUDGET  = 40;     # seconds for all rounds together

my $t = InfTest->new(log_level => 'notice');
$t->write_directory;
$t->conf($t->default_conf(
    workers => $WORKERS,
    http    => q{log_format idem '$pid $status "$http_idempotency_key"';},
    server  => "access_log %%TESTDIR%%/idem.log idem;\n"
             . '        ' . STATS_LOCATION,
    main    => 'worker_rlimit_nofile 1024;',
));
$t->start_backend(control => { delay => $DELAY });
$t->run;

is(scalar(my @w = $t->worker_pids), $WORKERS, "$WORKERS worker processes");

sub key_request { my ($key, $body) = @_; return $t->idem_request($key, body => $body); }

# pids of the workers that logged an answer for a key
sub workers_for {
    my ($key) = @_;
    my %p;
    for my $l (split /\n/, $t->read_file('idem.log') // '') {
        $p{$1} = 1 if $l =~ /^(\d+) \d+ "\Q$key\E"$/;
    }
    return scalar keys %p;
}

# ---------------------------------------------------------------- rounds

my $start = Time::HiRes::time();
my ($total_409, $total_replays, $multi_worker_rounds) = (0, 0, 0);
my ($total_mismatches, %spread) = (0);

for my $round (1 .. $ROUNDS) {
    if (Time::HiRes::time() - $start > $BUDGET) {
        fail("round $round: over the time budget of $BUDGET s");
        last;
    }

    my $key = sprintf('conc-%02d-%d-%04x', $round, $$, int rand 65536);
    my $body = qq({"prompt":"round $round"});
    my $n0 = $t->forwards();

    # one client in five sends its request after the backend's delay
    my ($ready, @a) = $t->burst(key_request($key, $body), $CLIENTS,
                           late => 2 * $DELAY);

    subtest "round $round: $CLIENTS parallel requests with key $key" => sub {
        my $c = $t->check_burst($n0, $ready, \@a, clients => $CLIENTS);
        $total_409 += @{ $c->{busy} };
        $total_replays += @{ $c->{replays} };
    };

    # the key is answered now: a second burst gets nothing but replays
    if ($round % 3 == 1) {
        my ($ready2, @b) = $t->burst(key_request($key, $body), $CLIENTS);
        my $n1 = $t->forwards();
        subtest "round $round: $CLIENTS parallel requests after it completed" => sub {
            is(scalar @b, $CLIENTS, 'every client got an answer');
            is(scalar(grep { $_->status == 202
                             && ($_->header('idempotent-replayed') // '') eq 'true' } @b),
               $CLIENTS, 'all are replays (202, Idempotent-Replayed: true)');
            my %bodies = map { $_->body => 1 } @b;
            is(scalar keys %bodies, 1, 'all with the same body');
            is($n1 - $n0, 1, 'still exactly one forward for the key');
        };
        $total_replays += grep { ($_->header('idempotent-replayed') // '') eq 'true' } @b;
        # and the same key with another body: a mismatch for everyone
        my ($ready3, @c) = $t->burst(key_request($key, '{"prompt":"other"}'), 20);
        is(scalar(grep { $_->status == 422
                         && ($_->json || {})->{error}{code} eq 'IDEMPOTENCY_KEY_REUSED' } @c),
           20, "round $round: 20 parallel requests with another body: all 422 REUSED");
        $total_mismatches += 20;
    }

    my $nw = workers_for($key);
    $spread{$nw}++;
    $multi_worker_rounds++ if $nw >= 2;
}

my $elapsed = Time::HiRes::time() - $start;
note(sprintf('%d rounds in %.1f s; %d answers 409, %d replays; '
             . 'workers per key: %s', $ROUNDS, $elapsed, $total_409,
             $total_replays, join(', ', map { "$_ in $spread{$_} rounds" }
                                        sort keys %spread)));
cmp_ok($multi_worker_rounds, '>=', int($ROUNDS / 2),
       'the requests of a round were spread over several workers '
       . "(in $multi_worker_rounds of $ROUNDS rounds)");

Time::HiRes::sleep(0.3);
is($t->forwards(), $ROUNDS, "$ROUNDS keys, $ROUNDS forwards in all");

my $s = $t->stats();
is($s->{claims}, $ROUNDS, 'stats: one claim per key');
is($s->{inflight}, 0, 'stats: nothing left in flight');
is($s->{keyed}, $ROUNDS, 'stats: one entry per key');
is($s->{conflicts}, $total_409, 'stats: conflicts = the 409s answered');
is($s->{replays}, $total_replays, 'stats: replays = the replays answered');
is($s->{mismatches}, $total_mismatches, 'stats: mismatches = the 422s answered');

$t->check_log_clean;

done_testing;
