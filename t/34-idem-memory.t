#!/usr/bin/perl

# CONTRACT 3: an unexpired idempotency entry is never evicted.  When the
# zone is full, job records without a key and expired entries make room;
# when nothing can, 503 CAPACITY with Retry-After, a counter and one
# rate-limited log line.  A tiny zone (32k) is filled to see it.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use Digest::SHA ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $TTL = 4;

my $t = InfTest->setup(log_level => 'info',
    zone   => "zone=jobs:32k ttl=${TTL}s org_share=100%",
    location => 'influencers_busy_retry_after 2s;',
    server => STATS_LOCATION);

my %expect = map { $_ => 0 } qw(claims replays mismatches capacityRejections
                                accepted);

my $s = $t->stats();
my $R = $s->{records} // 0;
my $SIZE = $s->{recordSize} // 0;
ok($R >= 8 && $R < 200, "a 32k zone holds a few dozen records ($R)");
is($s->{entries}, 0, 'stats: no entries at the start');
is($s->{bytesInUse}, 0, 'stats: no bytes in use at the start');
cmp_ok($SIZE * $R, '<=', 32 * 1024, 'records * recordSize fits in 32k');

# ---------------------------------------------------------------- jobs without a key make room

{
    my $ok = 0;
    $ok += $t->idem(undef, body => qq({"prompt":"keyless $_"}))->status == 202 for 1 .. $R + 5;
    is($ok, $R + 5, sprintf('%d jobs without a key in %d records: all 202 (the oldest evicted)',
                            $R + 5, $R));
    $expect{claims} += $R + 5;
    $expect{accepted} += $R + 5;
    my $s = $t->stats();
    is($s->{entries}, $R, 'stats: every record in use');
    is($s->{keyed}, 0, 'stats: none keyed');
}

my $kfill0 = Time::HiRes::time();
my %first;
{
    my $ok = 0;
    for my $i (1 .. $R) {
        my $r = $t->idem("mem-$i", body => qq({"prompt":"keyed $i"}));
        $first{$i} = $r->body;
        $ok++ if $r->status == 202 && !defined $r->header('idempotent-replayed');
    }
    is($ok, $R, "then $R keyed requests: all 202 (jobs without a key make room)");
    $expect{claims} += $R;
    $expect{accepted} += $R;
}
my $kfill1 = Time::HiRes::time();
note(sprintf('filled %d keyed entries in %.2f s', $R, $kfill1 - $kfill0));

# ---------------------------------------------------------------- full

{
    my $s = $t->stats();
    is($s->{entries}, $R, 'stats: entries = records');
    is($s->{keyed}, $R, 'stats: every record an unexpired entry');
    is($s->{bytesInUse}, $R * $SIZE, 'stats: bytesInUse = entries * recordSize');

    my $n0 = $t->forwards();
    my $before = $t->count_log(qr/is full/);
    is($before, 0, 'no "is full" line yet');
    my $m0 = int(time / 60);

    my $r = $t->idem('mem-new-0', body => '{}');
    check_error($r, 503, 'CAPACITY', undef, 'a new key in a full zone: 503 CAPACITY');
    is($r->header('retry-after'), 2, '503 carries Retry-After (influencers_busy_retry_after)');
    my $n503 = 1;
    for my $i (1 .. 25) {
        my $x = $t->idem("mem-new-$i", body => '{}');
        $n503++ if $x->status == 503 && ($x->json || {})->{error}{code} eq 'CAPACITY'
                   && defined $x->header('retry-after');
    }
    is($n503, 26, '26 new keys: all 503 CAPACITY with Retry-After');

    my $nk = 0;
    for my $i (1 .. 4) {
        my $x = $t->idem(undef, body => qq({"prompt":"keyless late $i"}));
        $nk++ if $x->status == 503 && ($x->json || {})->{error}{code} eq 'CAPACITY';
    }
    is($nk, 4, 'requests without a key: 503 CAPACITY too (every record is an entry)');
    $expect{capacityRejections} += 30;
    is($t->forwards(), $n0, 'nothing forwarded while full');

    # every unexpired entry is still there
    my $replayed = 0;
    for my $i (1 .. $R) {
        my $x = $t->idem("mem-$i", body => qq({"prompt":"keyed $i"}));
        $replayed++ if $x->status == 202
                       && ($x->header('idempotent-replayed') // '') eq 'true'
                       && $x->body eq $first{$i};
    }
    is($replayed, $R, "all $R entries still replay while the zone is full");
    $expect{replays} += $R;

    check_error($t->idem('mem-1', body => '{"prompt":"something else"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, 'a reuse is still told apart while full');
    $expect{mismatches}++;

    my $m1 = int(time / 60);
    ok(Time::HiRes::time() < $kfill0 + $TTL, '(all of this within the ttl)');

    my @lines = $t->log_lines(qr/is full/);
    if ($m0 == $m1) {
        is(scalar @lines, 1, 'error.log: exactly one "is full" line for 30 rejections');
    } else {
        ok(@lines >= 1 && @lines <= 2,
           'error.log: one "is full" line per minute (the rejections spanned two)');
    }
    like($lines[0] // '', qr/\[warn\].*influencers zone "jobs" is full/,
         'the line is a [warn] naming the zone');

    my $st = $t->stats();
    is($st->{capacityRejections}, 30, 'stats: 30 capacity rejections');
}

# ---------------------------------------------------------------- expiry makes room

sleep_until($kfill1 + $TTL + 0.3);
{
    my $n0 = $t->forwards();
    my $r = $t->idem('mem-after-1', body => '{}');
    my $j = check_accepted($r, 'after the ttl, a new key: 202 (expired entries make room)');
    ok(!defined $r->header('idempotent-replayed'), '... not a replay');
    my $k = $t->idem(undef, body => '{}');
    is($k->status, 202, 'after the ttl, a request without a key: 202');
    my $old = $t->idem('mem-1', body => '{"prompt":"keyed 1"}');
    is($old->status, 202, 'after the ttl, an expired key: 202');
    ok(!defined $old->header('idempotent-replayed') && $old->body ne $first{1},
       '... a new job');
    my $ok = 0;
    for my $i (1 .. $R - 3) {
        $ok++ if $t->idem("mem-after-more-$i", body => '{}')->status == 202;
    }
    is($ok, $R - 3, sprintf('%d more new keys: 202 (every record made free by expiry)', $R - 3));
    is($t->forwards(), $n0 + $R, "$R forwards");
    $expect{claims} += $R;
    $expect{accepted} += $R;

    # R - 1 entries and one job without a key: the job makes room once more
    my $extra = $t->idem('mem-after-evict', body => '{}');
    is($extra->status, 202, 'one more new key: 202 (the job without a key evicted)');
    $expect{claims}++;
    $expect{accepted}++;
    my $over = $t->idem('mem-after-overflow', body => '{}');
    is($over->status, 503, 'then the zone is full of new entries again: 503');
    $expect{capacityRejections}++;
}

# ---------------------------------------------------------------- the counters

{
    my $s = $t->stats();
    my $keyed = $R;       # every record an entry made after the ttl
    is($s->{entries}, $R, 'stats: entries');
    is($s->{keyed}, $keyed, 'stats: keyed');
    is($s->{inflight}, 0, 'stats: inflight');
    is($s->{bytesInUse}, $R * $SIZE, 'stats: bytesInUse');
    for my $c (sort keys %expect) {
        is($s->{$c}, $expect{$c}, "stats: $c = $expect{$c}");
    }
    is($s->{conflicts}, 0, 'stats: conflicts = 0');
    is($s->{releases}, 0, 'stats: releases = 0');
    is($s->{failed}, 0, 'stats: failed = 0');
}

$t->check_log_clean;
$t->cleanup;

# ---------------------------------------------------------------- a shorter ttl

# Entries of a longer ttl (from before a reload) expire later than new
# ones: the expired new ones still make room, found by a sweep that looks
# at a few records per request.  Entries read back from a state file are
# cut to the ttl configured now.
for my $how ('restart', 'reload') {
    $t = InfTest->setup(log_level => 'info',
        zone   => 'zone=jobs:32k ttl=1h org_share=100% state=%%TESTDIR%%/jobs.state',
        server => STATS_LOCATION);
    my $R = $t->stats()->{records} // 0;
    my $ok = 0;
    $ok += $t->idem("long-$_", body => '{}')->status == 202 for 1 .. 20;
    is($ok, 20, "$how: 20 entries with ttl=1h");
    my $conf = $t->default_conf(
        zone   => 'zone=jobs:32k ttl=1s org_share=100% state=%%TESTDIR%%/jobs.state',
        server => STATS_LOCATION);
    if ($how eq 'restart') {
        $t->stop;
        $t->conf($conf);
        $t->run;
    } else {
        ok($t->reload(conf => $conf), 'a reload to ttl=1s');
    }
    is($t->stats()->{keyed}, 20, "$how: the 20 entries are kept");
    $ok = 0;
    $ok += $t->idem("short-$_", body => '{}')->status == 202 for 1 .. $R - 20;
    is($ok, $R - 20, sprintf('%s: %d more entries with ttl=1s fill the zone', $how, $R - 20));
    Time::HiRes::sleep(1.3);
    my $r = $t->idem("$how-new", body => '{}');
    is($r->status, 202, "$how: once the ttl=1s entries expired, a new key: 202 "
                        . '(expired entries make room, wherever they are)')
        or diag($r->summary . "\n" . json_encode($t->stats()));
    my $long = $t->idem('long-1', body => '{}');
    if ($how eq 'reload') {
        is($long->header('idempotent-replayed'), 'true', "$how: a ttl=1h entry still replays");
    } else {
        # CONTRACT 3: entries loaded from a file never outlive the ttl
        # configured now
        check_new_job($long, "$how: a ttl=1h entry read back under ttl=1s has expired with it");
    }
    $t->cleanup;
}

# ISSUE 9: at most 256 bytes of zone per cached entry.  A 1m zone is filled
# from a hand-made state file (faster than 6,000 requests) with more
# entries than it holds: the newest load, up to nine tenths of the records
# (ISSUE 14: a restore leaves room for new jobs), every loaded entry is in
# the index, sampled entries replay, one left out is a new job, and the
# stats say what an entry costs.
{
    my $org = 'org_acme';
    my $path = '/v1/projects/' . P_FEMALE . '/influencers';
    my $fp = Digest::SHA::sha256("POST $path\n" . '{}');
    my $far = 4102444800000;    # 2100-01-01
    my $N = 8000;               # more than 1m holds
    my @records = map {
        state_record(key => Digest::SHA::sha256(chr(length $org) . $org . "fill-$_"),
                     fingerprint => $fp,
                     job_id => pack('n', 0) . pack('N', 0x01000000 + $_) . ("\x11" x 10),
                     inf_id => "\x22" x 16, expires => $far)
    } 1 .. $N;
    my $f = InfTest->new(log_level => 'info');
    $f->write_directory;
    $f->conf($f->default_conf(zone => 'zone=jobs:1m ttl=1h org_share=100% state=%%TESTDIR%%/fill.state',
                              server => STATS_LOCATION));
    $f->start_backend;
    # a snapshot is written newest first: the first entries are the newest
    $f->write_file($f->path('fill.state'), state_snapshot(@records));
    $f->run;
    my $s = $f->stats();
    my $records = $s->{records} // 0;
    my $room = $records - int($records / 10);
    is($s->{keyed}, $room, "a 1m zone filled from a state file: $room of its $records records keyed, a tenth left free");
    like(($f->log_lines(qr/were not loaded/))[-1] // '',
         qr/\[warn\].*is too small for its state: ${\($N - $room)} entries were not loaded, the oldest first \(0 over their org's share of 100%, ${\($N - $room)} past the room kept free for new jobs/,
         'the log says how many were left out, and why');
    cmp_ok($records, '>=', 1024 * 1024 / 256, '1m holds at least 4,096 entries (256 bytes or less each)');
    cmp_ok($s->{recordSize}, '<=', 256, "stats: recordSize $s->{recordSize} bytes, at most 256");
    cmp_ok(int(1024 * 1024 / $records), '<=', 256,
           sprintf('1m / %d records = %d bytes of zone per entry', $records, 1024 * 1024 / $records));
    is($s->{bytesInUse}, $room * $s->{recordSize}, 'stats: bytesInUse = entries * recordSize');
    my $replayed = 0;
    my @sample = (1, 2, 3, int($room / 2), $room - 1, $room);
    for my $i (@sample) {
        my $r = $f->idem("fill-$i", body => '{}');
        $replayed++ if $r->status == 202 && ($r->header('idempotent-replayed') // '') eq 'true';
    }
    is($replayed, scalar @sample, 'entries from the first, the middle and the last loaded replay');
    is($f->forwards, 0, 'nothing forwarded');
    my $r = $f->idem('fill-' . ($room + 1), body => '{}');
    check_new_job($r, 'an entry left out (older) is not there: its key is a new job, there is room for it');
    is($f->forwards, 1, 'forwarded');
    $f->check_log_clean;
    $f->cleanup;
}

done_testing;
