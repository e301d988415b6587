#!/usr/bin/perl

# CONTRACT 3: no org can lock out another.  Each org may hold at most its
# share of the zone (influencers_zone ... org_share=N%, default 25%):
# max(1, records * N / 100) records, counting its requests in flight (with
# or without a key) and its unexpired idempotency entries.  An org at its
# share gets 503 CAPACITY with Retry-After (counted as shareRejections,
# logged once a minute) while every other org is served; its replays still
# replay (a replay takes no record).  Finished jobs without a key, failed
# forwards and expired entries do not count.  With org_share=100% there is
# no share: a full zone is a full zone (capacityRejections).
#
# Org A is org_acme (K_WRITE, P_FEMALE), org B is org_globex (K_GLOBEX,
# P_GLOBEX): the harness's default directory.  Two workers with "listen
# ... reuseport", so that the kernel spreads the connections over both and
# the share is seen to hold across workers; the access log names the
# worker of each answer.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use POSIX ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $RA = 2;    # influencers_busy_retry_after

# a configuration with the zone arguments given, two workers, reuseport
# and a per-worker access log
sub share_conf {
    my ($t, $zone) = @_;
    my $conf = $t->default_conf(
        zone     => $zone,
        workers  => 2,
        # section 2's forwards last 6 s: a loaded machine's must not 504
        read_timeout => '10s',
        location => "influencers_busy_retry_after ${RA}s;",
        http     => q{log_format share '$pid $status "$http_idempotency_key" $sent_http_idempotent_replayed $request_uri';},
        server   => "access_log %%TESTDIR%%/share.log share;\n"
                  . '        ' . STATS_LOCATION,
    );
    $conf =~ s/listen 127\.0\.0\.1:%%PORT%%;/listen 127.0.0.1:%%PORT%% reuseport;/
        or die 'no listen line to add reuseport to';
    return $conf;
}

sub start {
    my (%o) = @_;
    my $t = InfTest->new(log_level => 'info');
    $t->write_directory;
    $t->conf(share_conf($t, $o{zone}));
    $t->start_backend(control => $o{control});
    $t->run;
    return $t;
}

# requests of org A and org B
sub A { my ($t, $key, %o) = @_; return $t->idem($key, %o); }
sub B {
    my ($t, $key, %o) = @_;
    return $t->idem($key, key => K_GLOBEX, project => P_GLOBEX, %o);
}
sub A_async { my ($t, $key, %o) = @_; return $t->idem_async($key, %o); }
sub B_async {
    my ($t, $key, %o) = @_;
    return $t->idem_async($key, key => K_GLOBEX, project => P_GLOBEX, %o);
}

sub is_capacity {
    my ($r) = @_;
    return $r->status == 503
        && ((($r->json || {})->{error} || {})->{code} // '') eq 'CAPACITY'
        && ($r->header('retry-after') // '') eq $RA;
}

sub statuses {
    my %n;
    $n{$_->status}++ for @_;
    return join ', ', map { "$_ x$n{$_}" } sort keys %n;
}

# pid => number of answers in share.log whose line matches $re
sub workers_of {
    my ($t, $re) = @_;
    my %p;
    for my $l (split /\n/, $t->read_file('share.log') // '') {
        next unless $l =~ $re && $l =~ /^(\d+) /;
        $p{$1}++;
    }
    return \%p;
}

sub limit_of { my ($records, $pct) = @_; my $l = int($records * $pct / 100); return $l < 1 ? 1 : $l; }

# ================================================================ 1. a flood of new keys

my $t = start(zone => 'zone=jobs:64k ttl=1h org_share=25%');

is(scalar(my @w = $t->worker_pids), 2, 'two worker processes');

my $s = $t->stats();
my $R = $s->{records} // 0;
my $L = $s->{orgLimit} // 0;
ok($R >= 100 && $R < 400, "a 64k zone holds a few hundred records ($R)");
is($L, limit_of($R, 25), "stats: orgLimit = max(1, $R * 25 / 100) = $L");
cmp_ok($L, '>=', 5, 'a share of several records');
is($s->{orgs}, 0, 'stats: no org holds a record at the start');
is($s->{largestOrg}, 0, 'stats: largestOrg 0 at the start');
is($s->{shareRejections}, 0, 'stats: shareRejections 0 at the start');

my %a_first;
for my $i (1 .. 3) {
    my $r = A($t, "a-$i");
    check_new_job($r, "A: key a-$i");
    $a_first{$i} = $r;
}
$s = $t->stats();
is($s->{orgs}, 1, 'stats: one org holds records');
is($s->{largestOrg}, 3, 'stats: largestOrg 3 (A)');

# B sends L + 10 new keys at once, over as many connections: exactly L
# claims succeed across the two workers, whatever the order
my $EXTRA = 10;
my $n0 = $t->forwards();
my %b_first;
my @bad;
{
    my @socks = map { [$_, B_async($t, "b-$_")] } 1 .. $L + $EXTRA;
    for my $x (@socks) {
        my $r = finish_async($x->[1], 10);
        if ($r->status == 202) {
            $b_first{$x->[0]} = $r;
        } elsif (!is_capacity($r)) {
            push @bad, $r;
        }
    }
}
is(scalar keys %b_first, $L, "B: $L of " . ($L + $EXTRA) . " concurrent new keys accepted (its share)");
is(scalar @bad, 0, "B: the other $EXTRA are 503 CAPACITY with Retry-After: $RA")
    or diag(join "\n", map { $_->summary } @bad);
is($t->forwards(), $n0 + $L, "B: $L forwards, none for the refused keys");

{
    my $k = (grep { !$b_first{$_} } 1 .. $L + $EXTRA)[0];
    my $r = B($t, "b-$k");
    check_error($r, 503, 'CAPACITY', undef, "B: a refused key again: 503 CAPACITY");
    is($r->header('retry-after'), $RA, "B: ... with Retry-After: $RA");
}

$s = $t->stats();
is($s->{shareRejections}, $EXTRA + 1, 'stats: shareRejections counts the refusals');
is($s->{capacityRejections}, 0, 'stats: capacityRejections 0 (the zone is not full)');
is($s->{largestOrg}, $L, "stats: largestOrg $L (B at its share)");
is($s->{orgs}, 2, 'stats: two orgs hold records');
is($s->{keyed}, $L + 3, 'stats: keyed = B\'s share + A\'s 3');
cmp_ok($s->{entries}, '<', $R, 'the zone itself is far from full');

# B at its share: its replays still replay, a new record is refused
{
    my ($ok, $n) = (0, 0);
    for my $k (sort { $a <=> $b } keys %b_first) {
        my $r = B($t, "b-$k");
        $n++;
        $ok++ if $r->status == 202 && $r->body eq $b_first{$k}->body
                 && ($r->header('idempotent-replayed') // '') eq 'true';
    }
    is($ok, $L, "B at its share: all $L accepted keys replay (byte-identical, Idempotent-Replayed)");
    my $k1 = (sort { $a <=> $b } keys %b_first)[0];
    check_replay(B($t, "b-$k1"), $b_first{$k1}, 'B at its share: a replay in full');
    check_error(B($t, "b-$k1", body => '{"prompt":"other"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, 'B at its share: a key reused with another body: 422, not 503');

    my $f0 = $t->forwards();
    my $r = B($t, undef);
    check_error($r, 503, 'CAPACITY', undef, 'B at its share: a request without a key: 503 CAPACITY');
    is($r->header('retry-after'), $RA, "... with Retry-After: $RA");
    my $n503 = 0;
    $n503 += is_capacity(B($t, undef, body => qq({"prompt":"keyless $_"}))) ? 1 : 0 for 1 .. 3;
    $n503 += is_capacity(B($t, "b-new-$_")) ? 1 : 0 for 1 .. 3;
    is($n503, 6, 'B at its share: 3 more without a key, 3 more new keys: all 503 CAPACITY');
    is($t->forwards(), $f0, 'B at its share: nothing forwarded');
}

# A is served all along
{
    my $f0 = $t->forwards();
    my @socks = map { A_async($t, "a-new-$_") } 1 .. 5;
    my @r = map { finish_async($_, 10) } @socks;
    is(scalar(grep { $_->status == 202 && !defined $_->header('idempotent-replayed') } @r), 5,
       'A while B is at its share: 5 concurrent new keys, all 202 new jobs')
        or diag(statuses(@r));
    check_new_job(A($t, undef), 'A while B is at its share: a request without a key');
    check_replay(A($t, "a-$_"), $a_first{$_}, "A while B is at its share: a-$_ replays") for 1 .. 3;
    is($t->forwards(), $f0 + 6, 'A: 6 forwards');
}

$s = $t->stats();
is($s->{shareRejections}, $EXTRA + 1 + 7, 'stats: shareRejections, every refusal of B and only those');
is($s->{capacityRejections}, 0, 'stats: capacityRejections still 0');
is($s->{largestOrg}, $L, 'stats: largestOrg still B\'s share');
is($s->{orgs}, 2, 'stats: orgs 2');
is($s->{orgLimit}, $L, 'stats: orgLimit unchanged');
is($s->{keyed}, $L + 8, 'stats: keyed = B\'s share + A\'s 8 (the job without a key is no entry)');

# the answers came from both workers, and the share held across them
{
    my $b_ok = workers_of($t, qr/^\d+ 202 "b-\d+" - /);   # first answers, not replays
    my $b_no = workers_of($t, qr/^\d+ 503 "b-/);
    my $all  = workers_of($t, qr/influencers/);
    note('B accepted per worker: ' . join(', ', map { "$_: $b_ok->{$_}" } sort keys %$b_ok));
    note('B refused per worker: ' . join(', ', map { "$_: $b_no->{$_}" } sort keys %$b_no));
    is(scalar keys %$all, 2, 'the requests were answered by both workers');
    is(scalar keys %$b_ok, 2, 'B\'s accepted keys were claimed on both workers (one share for the zone)');
}

# one [warn] line, however many refusals
{
    my @lines = $t->log_lines(qr/holds its whole share/);
    ok(@lines >= 1 && @lines <= 2, 'error.log: one "holds its whole share" line (two if a minute turned)')
        or diag(scalar @lines . ' lines');
    like($lines[0] // '', qr/\[warn\].*influencers zone "jobs": an org holds its whole share of $L records/,
         'the line is a [warn] naming the zone and the share');
    is($t->count_log(qr/is full/), 0, 'no "is full" line');
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ 2. in flight

# Claims in flight count: with a slow backend, B's concurrent requests
# beyond its share get 503 at once while A's go through.  Failed forwards
# and finished jobs without a key do not count.

$t = start(zone => 'zone=jobs:64k ttl=1h org_share=25%');
is($t->stats()->{orgLimit}, $L, "in flight: the same share ($L)");

{
    # long enough for all of B's requests to be in flight at once, on a
    # loaded machine too (at 1.5 s the first ones ended before the last
    # ones were claimed under a load of 5, at 3 s under a load of 8)
    my $DELAY = 6;
    $t->set_backend(delay => $DELAY);
    my $f0 = $t->forwards();
    my $t0 = Time::HiRes::time();
    # L - 1 without a key and one with a key
    my @b = map { B_async($t, undef, body => qq({"prompt":"slow $_"})) } 1 .. $L - 1;
    push @b, B_async($t, 'b-inflight-k');
    $t->wait_backend_requests($f0 + $L, timeout => $DELAY);
    my @bx = map { B_async($t, undef, body => qq({"prompt":"over $_"})) } 1 .. 3;
    push @bx, B_async($t, 'b-inflight-over');
    my @a = (A_async($t, undef), A_async($t, 'a-inflight-1'), A_async($t, 'a-inflight-2'));
    $t->wait_backend_requests($f0 + $L + 3, timeout => $DELAY);

    my $s = $t->stats();
    is($s->{inflight}, $L + 3, "stats: $L + 3 in flight");
    is($s->{largestOrg}, $L, "stats: largestOrg $L (B's requests in flight)");
    is($s->{keyed}, 0, 'stats: nothing keyed yet');
    is($s->{orgs}, 2, 'stats: orgs 2');

    # a key of B's in flight is a conflict, not a refusal: it takes no record
    my $busy = B($t, 'b-inflight-k');
    check_error($busy, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'B at its share: its key in flight again: 409, not 503');

    my @rx = map { finish_async($_, 10) } @bx;
    my $early = Time::HiRes::time() - $t0;
    is(scalar(grep { is_capacity($_) } @rx), 4,
       "B: 4 more requests while $L are in flight (3 without a key, 1 with): 503 CAPACITY")
        or diag(statuses(@rx));
    cmp_ok($early, '<', $DELAY, '... answered at once, not after the forwards');

    my @ra = map { finish_async($_, 10) } @a;
    is(scalar(grep { $_->status == 202 } @ra), 3, 'A: 3 requests meanwhile, all 202')
        or diag(statuses(@ra));
    my @rb = map { finish_async($_, 10) } @b;
    is(scalar(grep { $_->status == 202 } @rb), $L, "B: its $L requests in flight: 202")
        or diag(statuses(@rb));
    is($t->forwards(), $f0 + $L + 3, 'forwarded: B\'s share and A\'s 3, not B\'s extra 4');

    $s = $t->stats();
    is($s->{inflight}, 0, 'stats: nothing in flight after');
    is($s->{largestOrg}, 2, 'stats: largestOrg 2 (A\'s two entries; B\'s finished jobs without a key count no more)');
    is($s->{orgs}, 2, 'stats: orgs 2 (B holds its one entry)');
    is($s->{keyed}, 3, 'stats: keyed 3');
    is($s->{shareRejections}, 4, 'stats: shareRejections 4');
    check_replay(B($t, 'b-inflight-k'), $rb[-1], 'B: its key accepted in flight replays');
    $t->set_backend;
}

{
    my $f0 = $t->forwards();
    my $ok = 0;
    $ok += B($t, undef, body => qq({"prompt":"again $_"}))->status == 202 ? 1 : 0 for 1 .. $L + 3;
    is($ok, $L + 3, sprintf('B: %d jobs without a key one after the other: all 202 (finished ones are not held)', $L + 3));

    $t->set_backend(status => 500);
    my $n502 = 0;
    $n502 += B($t, "b-fail-$_")->status == 502 ? 1 : 0 for 1 .. $L + 3;
    is($n502, $L + 3, sprintf('B: %d keys whose forward fails: all 502, never 503 (failed forwards are not held)', $L + 3));
    $t->set_backend;

    my $s = $t->stats();
    is($s->{shareRejections}, 4, 'stats: no new share rejection');
    is($s->{largestOrg}, 2, 'stats: largestOrg still 2');
    check_new_job(B($t, 'b-fail-1'), 'B: a failed key retried: 202');
    is($t->forwards(), $f0 + 2 * ($L + 3) + 1, 'every one of them forwarded');
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ 3. expiry

# B's expired entries stop counting: once they are past the ttl, B is
# served again.  A's entries, older than B's, expired too.

my $TTL = 3;
$t = start(zone => "zone=jobs:64k ttl=${TTL}s org_share=25%");
is($t->stats()->{orgLimit}, $L, "expiry: the same share ($L)");

{
    my $A_OLDER = 10;
    my $ok = 0;
    $ok += A($t, "a-old-$_")->status == 202 ? 1 : 0 for 1 .. $A_OLDER;
    is($ok, $A_OLDER, "A: $A_OLDER entries first");
    $ok = 0;
    my %first;
    for my $i (1 .. $L) {
        my $r = B($t, "b-exp-$i");
        $ok++ if $r->status == 202;
        $first{$i} = $r->body;
    }
    my $filled = Time::HiRes::time();
    is($ok, $L, "B: $L entries, its share");
    ok(is_capacity(B($t, 'b-exp-over')), 'B: one more key: 503 CAPACITY');
    ok(is_capacity(B($t, undef)), 'B: without a key: 503 CAPACITY');
    ok(Time::HiRes::time() < $filled + $TTL - 0.5, '(within the ttl)');

    sleep_until($filled + $TTL + 0.3);

    # every entry of both orgs is past its ttl: B is served at once, though
    # A's 10 older (expired) entries wait at the keyed queue's tail.
    my @seq;
    for my $i (1 .. 6) {
        my $r = B($t, "b-after-$i");
        push @seq, $r->status;
        last if $r->status == 202;
    }
    note("B's answers after its entries expired: @seq");
    # an org at its share expires its own oldest records first, wherever
    # other orgs' expired ones wait at the queues' tails
    is($seq[0], 202, 'B after the ttl: its first new key is accepted')
        or diag("@seq");
    is($seq[-1], 202, 'B after the ttl: a new key accepted');
    check_new_job(B($t, undef), 'B after the ttl: a request without a key');
    my $r = B($t, 'b-exp-1');
    check_new_job($r, 'B after the ttl: an expired key is a new job');
    isnt($r->body, $first{1}, '... not the old one');

    my $s = $t->stats();
    is($s->{orgs}, 1, 'stats: only B holds records (A\'s expired entries were trimmed)');
    note("stats after the ttl: largestOrg $s->{largestOrg}, keyed $s->{keyed}");
    # expiry is lazy, as limit_req's: an expired entry counts until a
    # request or a sweep takes it out, a few per request
    cmp_ok($s->{largestOrg}, '>=', 2, 'stats: largestOrg counts B\'s two new entries');
    cmp_ok($s->{largestOrg}, '<=', $s->{keyed} + $s->{inflight},
           'stats: largestOrg is no more than the records held');
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ 4. org_share=100%: no share

# One org may fill the whole zone; then it is the zone that is full, for
# every org: capacityRejections, not shareRejections.

$t = start(zone => 'zone=jobs:64k ttl=1h org_share=100%');
{
    my $s = $t->stats();
    is($s->{orgLimit}, $R, "org_share=100%: orgLimit = records ($R)");
    my $ok = 0;
    $ok += B($t, "b-all-$_")->status == 202 ? 1 : 0 for 1 .. $R;
    is($ok, $R, "org_share=100%: B alone fills all $R records");
    ok(is_capacity(B($t, 'b-all-over')), 'org_share=100%: then B: 503 CAPACITY');
    ok(is_capacity(A($t, 'a-all-over')), 'org_share=100%: and A too (the zone is full)');
    $s = $t->stats();
    is($s->{capacityRejections}, 2, 'stats: capacityRejections 2');
    is($s->{shareRejections}, 0, 'stats: shareRejections 0');
    is($s->{largestOrg}, $R, 'stats: largestOrg = records');
    is($s->{orgs}, 1, 'stats: orgs 1');
    is($t->count_log(qr/holds its whole share/), 0, 'no "holds its whole share" line');
    is($t->count_log(qr/is full/), 1, 'one "is full" line');
}
$t->check_log_clean;
$t->cleanup;

# ================================================================ 5. orgLimit for other shares

for my $c (['zone=jobs:64k', 25, 'org_share left out: 25%'],
           ['zone=jobs:64k org_share=50%', 50, 'org_share=50%'],
           ['zone=jobs:64k org_share=1%', 1, 'org_share=1% (at least one record)'])
{
    my ($zone, $pct, $name) = @$c;
    $t = start(zone => $zone);
    my $s = $t->stats();
    is($s->{orgLimit}, limit_of($s->{records}, $pct),
       "$name: orgLimit = max(1, $s->{records} * $pct / 100)");
    if ($pct == 1) {
        my $l = $s->{orgLimit};
        check_new_job(B($t, "b-$_"), "$name: B's key $_ of $l accepted") for 1 .. $l;
        ok(is_capacity(B($t, 'b-over')), "$name: one more refused");
        check_new_job(A($t, 'a-one'), "$name: A's first key accepted");
    }
    $t->check_log_clean;
    $t->cleanup;
}

# ================================================================ 6. nginx -t

$t = InfTest->new;
$t->write_directory;
for my $bad ('org_share=0%', 'org_share=101%', 'org_share=25', 'org_share=abc%',
             'org_share=%', 'org_share=-5%', 'org_share=')
{
    $t->conf(share_conf($t, "zone=jobs:64k $bad"));
    my ($rc, $err) = $t->test_config;
    isnt($rc, 0, "nginx -t refuses $bad");
    like($err, qr/\[emerg\].*org_share/, "... with a message naming org_share")
        or diag($err);
}
for my $good ('org_share=100%', 'org_share=1%', 'org_share=25%') {
    $t->conf(share_conf($t, "zone=jobs:64k $good"));
    my ($rc, $err) = $t->test_config;
    is($rc, 0, "nginx -t accepts $good") or diag($err);
}
$t->cleanup;

done_testing;
