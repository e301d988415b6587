#!/usr/bin/perl

# The zone's counters (influencers_stats): after each step of a known
# sequence of requests in a fresh nginx, every counter has an exact value:
# claims, replays, conflicts, mismatches, releases, lease expiries,
# capacity rejections, accepted, failed, entries, keyed, inflight, and
# bytesInUse = entries * recordSize.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $LEASE = 1;

my $t = InfTest->setup(log_level => 'info',
    zone   => "zone=jobs:32k ttl=1h lease=${LEASE}s org_share=100%",
    server => STATS_LOCATION);

my @FIELDS = qw(records entries keyed inflight bytesInUse recordSize claims
                replays conflicts mismatches releases leaseExpiries
                capacityRejections accepted failed resends unknownOutcomes
                keptInDoubt);

# the stats answer itself
my ($s0, $r0) = $t->stats();
is($r0->status, 200, 'GET on the stats location: 200');
like($r0->header('content-type') // '', qr{^application/json}i, 'application/json');
like($r0->body, qr/^\{"records":\d+,"entries":\d+,"keyed":\d+,"inflight":\d+,"bytesInUse":\d+,"recordSize":\d+,"claims":\d+,"replays":\d+,"conflicts":\d+,"mismatches":\d+,"releases":\d+,"leaseExpiries":\d+,"capacityRejections":\d+,"accepted":\d+,"failed":\d+,"orgs":\d+,"largestOrg":\d+,"orgLimit":\d+,"shareRejections":\d+,"redisOps":\d+,"redisFailures":\d+,"redisFallbacks":\d+,"redisStale":\d+,"resends":\d+,"unknownOutcomes":\d+,"keptInDoubt":\d+,"redisOwed":\d+,"redisOwedMax":\d+,"redisOwedKept":\d+,"redisOwedResent":\d+,"redisOwedAbandoned":\d+,"redisOwedUnkept":\d+,"redisUnsafe":\d+,"redisRestarts":\d+,"redisDataLost":\d+,"redisBadValues":\d+\}$/,
     'the stats body: every field, as a number, in the documented order');

my $R = $s0->{records} // 0;
my $S = $s0->{recordSize} // 0;
ok($R > 10 && $S > 0, "the zone holds $R records of $S bytes");

my %exp = (records => $R, recordSize => $S, map { $_ => 0 }
           grep { !/^(?:records|recordSize)$/ } @FIELDS);

# compare every field (but those listed in $skip) with %exp
sub check_stats {
    my ($name, @skip) = @_;
    my %skip = map { $_ => 1 } @skip;
    $exp{bytesInUse} = $exp{entries} * $S;
    my ($s) = $t->stats();
    my %got = map { $_ => $s->{$_} } grep { !$skip{$_} } @FIELDS;
    my %want = map { $_ => $exp{$_} } grep { !$skip{$_} } @FIELDS;
    is_deeply(\%got, \%want, "stats after: $name")
        or diag('got:  ' . json_encode(\%got) . "\nwant: " . json_encode(\%want));
    is($s->{bytesInUse}, ($s->{entries} // -1) * $S, "$name: bytesInUse = entries * recordSize");
    return $s;
}

check_stats('a fresh start');

is($t->idem(undef)->status, 202, '1. a request without a key: 202');
$exp{claims}++; $exp{accepted}++; $exp{entries}++;
check_stats('1 (a job without a key)');

is($t->idem('cnt-a')->status, 202, '2. key cnt-a: 202');
$exp{claims}++; $exp{accepted}++; $exp{entries}++; $exp{keyed}++;
check_stats('2 (a keyed job)');

is($t->idem('cnt-a')->header('idempotent-replayed'), 'true', '3. cnt-a again: a replay') for 1 .. 2;
$exp{replays} += 2;
check_stats('3 (two replays)');

is($t->idem('cnt-a', body => '{"gender":"male"}')->status, 422, '4. cnt-a, another body: 422');
$exp{mismatches}++;
check_stats('4 (a mismatch)');

$t->set_backend(status => 500);
is($t->idem('cnt-b')->status, 502, '5. cnt-b, backend 500: 502');
$exp{claims}++; $exp{failed}++; $exp{releases}++; $exp{entries}++;
check_stats('5 (a failed forward released its key; the failed job stays a record)');

$t->set_backend;
is($t->idem('cnt-b')->status, 202, '6. cnt-b again: 202');
$exp{claims}++; $exp{accepted}++; $exp{entries}++; $exp{keyed}++;
check_stats('6 (the retry)');

# 7. in flight (shorter than the lease)
{
    $t->set_backend(delay => 0.6);
    my $n0 = $t->forwards();
    my $sock = $t->idem_async('cnt-c', body => '{}');
    $t->wait_backend_requests($n0 + 1);
    $exp{claims}++; $exp{entries}++; $exp{inflight}++;
    check_stats('7a (one request in flight)');
    my $busy = $t->idem('cnt-c');
    is($busy->status, 409, '7b. cnt-c while in flight: 409');
    is($busy->header('retry-after'), 1, '7b. with the default Retry-After: 1');
    $exp{conflicts}++;
    is($t->idem('cnt-c', body => '{"prompt":"x"}')->status, 422,
       '7c. cnt-c with another body while in flight: 422');
    $exp{mismatches}++;
    check_stats('7b, 7c (a conflict, a mismatch)');
    is(finish_async($sock, 5)->status, 202, '7d. the request in flight: 202');
    $exp{inflight}--; $exp{accepted}++; $exp{keyed}++;
    check_stats('7d (completed)');
}

# 8. a lease running out under a slow forward: the retry sends the same
# job again, in the same record; the first forward's late acceptance
# changes nothing
{
    $t->set_backend(delay => 1.5);
    my $n0 = $t->forwards();
    my $sock = $t->idem_async('cnt-d', body => '{}');
    $t->wait_backend_requests($n0 + 1);
    my $t0 = Time::HiRes::time();
    $exp{claims}++; $exp{entries}++; $exp{inflight}++;
    $t->set_backend;
    Time::HiRes::sleep($t0 + $LEASE + 0.15 - Time::HiRes::time());
    my $again = $t->idem('cnt-d');
    is($again->status, 202, '8a. cnt-d after the lease ran out: 202 (its job sent again)');
    is($again->header('idempotent-replayed'), 'true', '8a. marked as a replay');
    is($t->forwards(), $n0 + 2, '8a. forwarded');
    $exp{leaseExpiries}++; $exp{resends}++; $exp{accepted}++;
    $exp{keyed}++; $exp{inflight}--;
    check_stats('8a (a lease expiry, the job sent again)');
    my $first = finish_async($sock, 5);
    is($first->status, 202, '8b. the first cnt-d: 202');
    ok($first->body eq $again->body, '8b. the same job');
    check_stats('8b (the first forward accepted too: nothing changes)');
}

# 9. capacity: the free records, then the evictable ones (the job without
# a key, the failed job), then 503
{
    my $room = $R - $exp{entries} + 2;
    my $ok = 0;
    $ok += $t->idem("cnt-fill-$_")->status == 202 for 1 .. $room;
    is($ok, $room, "9a. $room new keys fill the zone: all 202");
    $exp{claims} += $room; $exp{accepted} += $room; $exp{keyed} += $room;
    $exp{entries} = $R;
    check_stats('9a (full of entries)');

    my $n503 = 0;
    my $full = $t->idem('cnt-over-0');
    is($full->status, 503, '9b. a new key in the full zone: 503');
    is($full->header('retry-after'), 1, '9b. with the default Retry-After: 1');
    $exp{capacityRejections}++;
    $n503 += $t->idem("cnt-over-$_")->status == 503 for 1 .. 3;
    $n503 += $t->idem(undef)->status == 503;
    is($n503, 4, '9b. three new keys and a request without a key: 503');
    $exp{capacityRejections} += 4;
    is($t->idem('cnt-a')->status, 202, '9c. cnt-a still replays');
    $exp{replays}++;
    is($t->idem('cnt-b', body => '{"gender":"female"}')->status, 422, '9d. cnt-b, another body: 422');
    $exp{mismatches}++;
    check_stats('9 (capacity rejections)');
}

$t->check_log_clean;

done_testing;
