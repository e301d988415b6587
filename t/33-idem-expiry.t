#!/usr/bin/perl

# CONTRACT 3: entries live for a configurable time (ttl), then the key is
# forgotten: the same key creates a new job, and another body is no longer
# a reuse.  Idempotency-Expires tells when.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(log_level => 'info', zone => 'zone=jobs:1m ttl=2s',
    server => STATS_LOCATION);

my $n0 = $t->forwards();
my $t0 = Time::HiRes::time();
my $a = $t->idem('exp-same', body => '{"prompt":"first"}');
my $b = $t->idem('exp-other', body => '{"prompt":"first"}');
my $ja = check_accepted($a, 'exp-same: 202') || {};
my $jb = check_accepted($b, 'exp-other: 202') || {};
is($t->forwards(), $n0 + 2, 'two forwards');

# Idempotency-Expires: about 2 s ahead (a whole second, so 1 to 3 s)
my $exp = http_date($a->header('idempotency-expires'));
ok(defined $exp, 'Idempotency-Expires is an HTTP date')
    or diag($a->header('idempotency-expires') // '(none)');
my $in = ($exp // 0) - $t0;
ok($in >= 1 && $in <= 3.01, 'Idempotency-Expires is ttl (2 s) ahead')
    or diag("expires in $in s");

# within a second: replays
Time::HiRes::sleep(0.5);
my $r = $t->idem('exp-same', body => '{"prompt":"first"}');
ok(Time::HiRes::time() < $t0 + 1.5, '(the replay was asked within the ttl)');
is($r->status, 202, 'within the ttl: 202');
is($r->header('idempotent-replayed'), 'true', 'within the ttl: a replay');
ok($r->body eq $a->body, 'within the ttl: the same body');
is($r->header('idempotency-expires'), $a->header('idempotency-expires'),
   'within the ttl: the same Idempotency-Expires');
check_error($t->idem('exp-other', body => '{"prompt":"second"}'), 422,
            'IDEMPOTENCY_KEY_REUSED', undef, 'within the ttl: another body is a reuse');
is($t->forwards(), $n0 + 2, 'no forward within the ttl');

# after 3 s: forgotten
sleep_until($t0 + 3);
my $c = $t->idem('exp-same', body => '{"prompt":"first"}');
my $jc = check_accepted($c, 'after the ttl, the same request: 202') || {};
ok(!defined $c->header('idempotent-replayed'), '... not a replay');
isnt($jc->{jobId}, $ja->{jobId}, '... a new job');
isnt($jc->{influencerId}, $ja->{influencerId}, '... a new influencer');
my $exp2 = http_date($c->header('idempotency-expires'));
ok(defined $exp2 && defined $exp && $exp2 > $exp, '... with a later Idempotency-Expires');

my $d = $t->idem('exp-other', body => '{"prompt":"second"}');
my $jd = check_accepted($d, 'after the ttl, the same key with another body: 202, not 422') || {};
isnt($jd->{jobId}, $jb->{jobId}, '... a new job');
is($t->forwards(), $n0 + 4, 'both forwarded');

my @fw = $t->backend_requests;
is_deeply([ map { $_->{h}{'idempotency-key'}[0] } @fw[-2, -1] ],
          [ $jc->{jobId}, $jd->{jobId} ], 'the new jobs were forwarded');

my $e = $t->idem('exp-same', body => '{"prompt":"first"}');
is($e->header('idempotent-replayed'), 'true', 'the new entry replays');
ok($e->body eq $c->body, '... the new job');

my $s = $t->stats();
is($s->{keyed}, 2, 'stats: two live entries');
is($s->{claims}, 4, 'stats: four claims');
is($s->{replays}, 2, 'stats: two replays');
is($s->{mismatches}, 1, 'stats: one mismatch');

$t->check_log_clean;

done_testing;
