#!/usr/bin/perl

# Faults under load (issue 8, part 3): the backend answering slowly for a
# while (1.5 s, above the backend location's proxy_read_timeout of 1 s;
# the lease is 2 s) while clients send new keys.
#
# Asserted: every answer is a 202 or a 504 (no broken connection); 504
# UPSTREAM_TIMEOUT comes at the timeout (between 0.9 and 2 s, never
# later than the lease); every 504 released its key (one release per 504
# in the stats; sent again, each is a new job: a 202 that is no replay);
# every 202 forwarded exactly once, no key forwarded twice during the
# load; no lease ran out (the timeout ends every forward first); the zone
# has nothing in flight.  A 504's job did reach the backend (it records a
# request when it reads it, then sleeps), so its key sent again makes a
# second job there: the price of releasing a key after a timeout
# (CONTRACT 3, 4), counted and reported.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use FaultLoad;

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $CLIENTS = 3;
my $SECONDS = 4;
my $SLOW_AT = 1.0;    # seconds into the load
my $FAST_AT = 2.5;
my $DELAY   = 1.5;    # the backend's answer time meanwhile
my $TIMEOUT = 1;      # proxy_read_timeout
my $LEASE   = 2;

my ($t, $base) = FaultLoad::gateway(memory => '16m', lease => $LEASE,
                                    read_timeout => "${TIMEOUT}s");

# ---------------------------------------------------------------- the load

my $start = Time::HiRes::time() + 0.3;
my $load = FaultLoad->start($t, name => 's', clients => $CLIENTS,
                            seconds => $SECONDS, start => $start, max => 4000,
                            pace => 0.002);
my ($slow, undef, $fast) = FaultLoad::fault_window($start,
    $SLOW_AT => sub { $t->set_backend(delay => $DELAY) },
    $FAST_AT => sub { $t->set_backend() });

my @r = $load->finish;
FaultLoad::check_ended($load, @r);

my @broken = grep { $_->{err} ne '-' } @r;
is(scalar @broken, 0, 'no broken connection') or diag(FaultLoad::sample(@broken));
my @odd = grep { $_->{err} eq '-' && $_->{status} != 202 && $_->{status} != 504 } @r;
is(scalar @odd, 0, 'every answer is a 202 or a 504') or diag(FaultLoad::sample(@odd));

my @e504 = grep { $_->{status} == 504 } @r;
my @acc  = grep { $_->{status} == 202 } @r;
cmp_ok(scalar @e504, '>=', $CLIENTS, 'the backend slow: 504s (' . scalar(@e504) . ')');
my @early = grep { $_->{sec} < $TIMEOUT - 0.1 } @e504;
is(scalar @early, 0, "no 504 before the timeout (${TIMEOUT} s)") or diag(FaultLoad::sample(@early));
my @late = grep { $_->{sec} > $TIMEOUT + 1 } @e504;
is(scalar @late, 0, 'every 504 within a second of the timeout, below the lease')
    or diag(FaultLoad::sample(@late));
my ($max504) = sort { $b <=> $a } map { $_->{sec} } @e504;
my ($min504) = sort { $a <=> $b } map { $_->{sec} } @e504;
my @late202 = grep { $_->{sec} > $TIMEOUT + 0.5 } @acc;
is(scalar @late202, 0, 'no 202 came after the timeout') or diag(FaultLoad::sample(@late202));
my @after = grep { $_->{t} > $fast + 0.2 } @r;
cmp_ok(scalar @after, '>=', 10, 'requests sent once the backend was fast again');
is(scalar(grep { $_->{status} != 202 } @after), 0, '... all 202');

# ---------------------------------------------------------------- forwards

my $fw0 = FaultLoad::check_forwarded_once($t, \@acc);
my @unseen = grep { ($fw0->{ $_->{key} } // 0) != 1 } @e504;
is(scalar @unseen, 0, 'every 504\'s job reached the backend once (it timed out there)');

my $s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight after the load');
is($s->{releases} - $base->{releases}, 0, 'stats: no key released by a 504 (ISSUE 14)');
is($s->{unknownOutcomes} - $base->{unknownOutcomes}, scalar @e504,
   'stats: one unknown outcome per 504: the job may be at the backend');
is($s->{accepted} - $base->{accepted}, scalar @acc, 'stats: one accept per 202');
is($s->{leaseExpiries} - $base->{leaseExpiries}, 0, 'stats: no lease ran out');

# every 504 key again: the key's one job, sent again at once (the forward
# is over: no 409), byte for byte, and accepted
my $how = FaultLoad::check_retry_in_doubt($t, 'every 504 key sent again:',
                                          map { $_->{key} } @e504);
is($how->{'the same job, sent again'} // 0, scalar @e504, '... each the same job, sent again')
    or diag(FaultLoad::tally_text($how));
my $fw1 = FaultLoad::forwards_by_marker($t);
my @bad = grep { ($fw1->{ $_->{key} } // 0) != 2 } @e504;
is(scalar @bad, 0, '... each forwarded once more (the timed-out forward and its resend)');
my $jobs = FaultLoad::jobs_by_marker($t);
is(scalar(grep { keys %{ $jobs->{ $_->{key} } || {} } != 1 } @e504), 0,
   '... both of one job: the backend has one job per key');
is(scalar(grep { ($fw1->{ $_->{key} } // 0) != 1 } @acc), 0,
   'the 202 keys were not forwarded again');

# once the lease has run out too
sleep_until($fast + $DELAY + $LEASE);
$s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight after the lease');
is($s->{leaseExpiries} - $base->{leaseExpiries}, 0, 'stats: still no lease ran out');
note(sprintf('RESULT backend-slow: %d requests: %d x 202, %d x 504 (%.2f-%.2f s, timeout %d s); '
             . 'slow for %.2f s; %d releases; sent again: %s',
             scalar @r, scalar @acc, scalar @e504, $min504 // 0, $max504 // 0, $TIMEOUT,
             $fast - $slow, $s->{releases} - $base->{releases},
             FaultLoad::tally_text($how)));

# ---------------------------------------------------------------- the log

my @lines = FaultLoad::check_log($t,
    qr/upstream timed out \(110: Connection timed out\)/, '"upstream timed out"');
is(scalar(grep { /upstream timed out/ } @lines), scalar @e504,
   'error.log: one "upstream timed out" per 504');

done_testing;
