#!/usr/bin/perl

# Faults under load (issue 8, part 3): the backend stopped and started
# again while clients send new keys.  While it is down the forwards fail:
# 502 UPSTREAM_ERROR, the key released; once it is back, 202s.
#
# Asserted: every answer is a 202 or a 502 (no broken connection, no
# other status); 502s while the backend is down and 202s after it is
# back; every 502 released its key (the stats count one release per 502,
# and every 502 key, sent again, is a new job: a 202 that is no replay);
# every 202 forwarded exactly once, no key forwarded twice during the
# load; the zone has nothing in flight.

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
my $DOWN_AT = 1.0;    # seconds into the load
my $UP_AT   = 2.2;
my $LEASE   = 2;

my ($t, $base) = FaultLoad::gateway(memory => '16m', lease => $LEASE);

# ---------------------------------------------------------------- the load

my $start = Time::HiRes::time() + 0.3;
my $load = FaultLoad->start($t, name => 'd', clients => $CLIENTS,
                            seconds => $SECONDS, start => $start, max => 4000,
                            pace => 0.002);
# $up: the backend accepts connections again
my ($down, $up0, $up) = FaultLoad::fault_window($start,
    $DOWN_AT => sub { $t->stop_backend }, $UP_AT => sub { $t->start_backend });
note(sprintf('backend down from %.2f s to %.2f s into the load (up again at %.2f s)',
             $down - $start, $up0 - $start, $up - $start));

my @r = $load->finish;
FaultLoad::check_ended($load, @r);

my @broken = grep { $_->{err} ne '-' } @r;
is(scalar @broken, 0, 'no broken connection') or diag(FaultLoad::sample(@broken));
my @odd = grep { $_->{err} eq '-' && $_->{status} != 202 && $_->{status} != 502 } @r;
is(scalar @odd, 0, 'every answer is a 202 or a 502') or diag(FaultLoad::sample(@odd));

my @e502 = grep { $_->{status} == 502 } @r;
my @acc  = grep { $_->{status} == 202 } @r;
cmp_ok(scalar @e502, '>=', 1, 'the backend down: 502s (' . scalar(@e502) . ')');
is(scalar(grep { $_->{t} < $down - 0.05 && $_->{t} + $_->{sec} < $down } @e502), 0,
   'no 502 before the backend went down');
my @after = grep { $_->{t} > $up + 0.5 } @r;
cmp_ok(scalar @after, '>=', 10, 'requests sent after it came back (' . scalar(@after) . ')');
my @after_bad = grep { $_->{status} != 202 } @after;
is(scalar @after_bad, 0, 'from half a second after it is back, every answer is a 202')
    or diag(FaultLoad::sample(@after_bad));
my %last;
$last{ $_->{client} } = $_ for @r;
is(scalar(grep { $_->{status} != 202 } values %last), 0, 'each client\'s last answer is a 202');

# 502 bodies: UPSTREAM_ERROR (a sample, on the wire: read them again)
{
    my $a = $t->idem('d-shape-1', body => '{"prompt":"d-shape-1"}');
    is($a->status, 202, 'a new key now: 202');
}

# ---------------------------------------------------------------- forwards

my $fw0 = FaultLoad::check_forwarded_once($t, \@acc);
my $reached = grep { $fw0->{ $_->{key} } } @e502;
note("$reached of the 502s had reached the backend (it was stopped while answering)");

my $s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight after the load');

# a 502 that never reached the backend (refused) releases its key; one cut
# after the job was sent (the backend stopped while answering) keeps it
my $unknown = $s->{unknownOutcomes} - $base->{unknownOutcomes};
is($s->{releases} - $base->{releases} + $unknown, scalar @e502,
   "stats: one release or one unknown outcome per 502 ($unknown unknown)");
is($s->{failed} - $base->{failed} + $unknown, scalar @e502,
   'stats: one failed forward or one unknown outcome per 502');
note("$unknown of the 502s were cut after the job was sent (the backend may or may not have "
     . "read it: $reached recorded it)");
is($s->{accepted} - $base->{accepted}, scalar(@acc) + 1, 'stats: one accept per 202');
is($s->{leaseExpiries} - $base->{leaseExpiries}, 0, 'stats: no lease ran out');

# every 502 key again: a new job if its job never reached the backend,
# else that job (sent again, or replayed)
my $how = FaultLoad::check_retry_in_doubt($t, 'every 502 key sent again:',
                                          map { $_->{key} } @e502);
note('the 502 keys sent again: ' . FaultLoad::tally_text($how));
my $fw1 = FaultLoad::forwards_by_marker($t);
my @acc_moved = grep { ($fw1->{ $_->{key} } // 0) != 1 } @acc;
is(scalar @acc_moved, 0, 'the 202 keys were not forwarded again');

sleep_until($up + $LEASE + 0.3) if $up + $LEASE + 0.3 > Time::HiRes::time();
$s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight after the lease');
note(sprintf('RESULT backend-down: %d requests: %d x 202, %d x 502 (%d had reached the backend); '
             . 'backend down %.2f s; %d releases; sent again: %s',
             scalar @r, scalar @acc, scalar @e502, $reached, $up0 - $down,
             $s->{releases} - $base->{releases}, FaultLoad::tally_text($how)));

# ---------------------------------------------------------------- the log

# nginx's own: a refused or reset connect (a backend closing its listening
# socket resets the connections still in its queue), a connection cut
# while the request is sent or the answer read
my $gone = qr/(?:connect|recv|readv|send|writev)\(\) failed \((?:32|104|111): [^)]*\) while (?:connecting to|sending request to|reading response header from|reading) upstream|upstream prematurely closed connection/;
FaultLoad::check_log($t, $gone, 'for a backend that went away');

done_testing;
