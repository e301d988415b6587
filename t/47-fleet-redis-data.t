#!/usr/bin/perl

# ISSUE 14, case 5 and 9: a Redis that can lose what it acknowledged is
# noticed, and what Redis holds or says is not trusted as is.
#
#   - Redis without AOF, or with a maxmemory-policy that evicts the
#     module's keys: a [warn] on connecting, at most once a minute per
#     zone, naming the settings to use; the stats say redisUnsafe 1.
#     With AOF and noeviction: no warning, redisUnsafe 0;
#   - Redis restarted without persistence (a new run_id, no AOF): an
#     [error] saying every entry it held is lost, counted (redisDataLost);
#     restarted with AOF: a [notice], counted as a restart only, and every
#     entry replays after it;
#   - a value in Redis the module did not write (a Retry-After past a day,
#     a claim with parameters the module does not know, bytes of another
#     program): never replayed nor sent; the key is answered 503
#     UNAVAILABLE, logged once a minute per worker, counted
#     (redisBadValues);
#   - values of the module's previous version ('D' accepted, 'F' in
#     flight) are still read: a rolling upgrade keeps its keys;
#   - a server that echoes the password in its error replies: the password
#     never reaches error.log.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Digest::SHA ();
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $UNSAFE = qr/\[warn\].*Redis at \S+ can lose entries it acknowledged/;

my $seq = 0;
sub fresh { return sprintf('fleet-data-%s-%d-%d', $_[0], $$, ++$seq); }

# the Redis key a request with $idem made (the one new key since @before)
sub new_key {
    my ($t, @before) = @_;
    my %old = map { $_ => 1 } @before;
    my @new = grep { !$old{$_} } $t->redis_keys('influencers:*');
    return @new == 1 ? $new[0] : undef;
}

# ============================================================ a Redis that keeps what it took

{
    my ($n1, $n2) = InfTest->fleet(log_level => 'info');
    my $r = $n1->idem(fresh('safe'));
    check_new_job($r, 'Redis with AOF and noeviction: 202');
    is($n1->count_log($UNSAFE), 0, 'no warning about what Redis keeps');
    is($n1->stats->{redisUnsafe}, 0, 'stats: redisUnsafe 0');

    # restarted with AOF: it comes back with its entries
    my $key = fresh('aof');
    my $first = $n1->idem($key);
    check_new_job($first, 'an entry before the restart');
    is($n2->idem(fresh('warm'))->status, 202, 'node 2 knows the Redis before the restart');
    Time::HiRes::sleep(1.1);    # appendfsync everysec
    $n1->restart_redis;
    my ($again, $t0) = (undef, Time::HiRes::time());
    do {
        $again = $n2->idem($key);
    } while ($again->status == 503 && Time::HiRes::time() < $t0 + 3
             && Time::HiRes::sleep(0.2));
    check_replay($again, $first, 'Redis restarted with AOF: the entry replays on node 2 (asked of Redis)');
    like(($n2->log_lines(qr/restarted or was replaced/))[-1] // '',
         qr/\[notice\].*Redis at \S+ restarted or was replaced \(a new run_id\); it reloads its AOF/,
         '[notice] Redis restarted, with its AOF');
    my $s = $n2->stats;
    cmp_ok($s->{redisRestarts}, '>=', 1, 'stats: redisRestarts counts it');
    is($s->{redisDataLost}, 0, 'stats: no data lost');
    $_->check_log_clean for $n1, $n2;
    $n1->cleanup;
}

# ============================================================ a Redis that can lose it

{
    my ($n1) = InfTest->fleet(nodes => 1, log_level => 'info',
                              redis_server => { persistence => 0 });
    check_new_job($n1->idem(fresh('noaof')), 'Redis without AOF: 202 all the same');
    like(($n1->log_lines($UNSAFE))[0] // '',
         qr/\[warn\].*zone "jobs": Redis at \S+ can lose entries it acknowledged, without AOF: a lost entry lets a retry create a second job; run it with "appendonly yes", "appendfsync everysec" and "maxmemory-policy noeviction" \(logged once a minute\)/,
         '[warn]: it can lose entries, without AOF, and what to set');
    is($n1->stats->{redisUnsafe}, 1, 'stats: redisUnsafe 1');
    $n1->idem(fresh('noaof')) for 1 .. 5;
    is($n1->count_log($UNSAFE), 1, 'the warning once a minute per zone, whatever the connections');

    # restarted without persistence: its entries are gone, and that is said
    my $key = fresh('lost');
    check_new_job($n1->idem($key), 'an entry before the restart');
    $n1->restart_redis;
    my $t0 = Time::HiRes::time();
    my $r;
    do {
        $r = $n1->idem(fresh('after'));
    } while ($r->status == 503 && Time::HiRes::time() < $t0 + 3
             && Time::HiRes::sleep(0.2));
    is($r->status, 202, 'Redis back (empty): new keys accepted');
    like(($n1->log_lines(qr/restarted without its data/))[-1] // '',
         qr/\[error\].*Redis at \S+ restarted without its data \(a new run_id, no AOF\): every entry it held is lost/,
         '[error]: Redis restarted without its data');
    cmp_ok($n1->stats->{redisDataLost}, '>=', 1, 'stats: redisDataLost counts it');
    $n1->check_log_clean;
    $n1->cleanup;
}

# an evicting policy, with AOF
{
    my ($n1) = InfTest->fleet(nodes => 1, log_level => 'info',
        redis_server => { args => ['--maxmemory-policy', 'allkeys-lru'] });
    check_new_job($n1->idem(fresh('lru')), 'Redis with allkeys-lru: 202');
    like(($n1->log_lines($UNSAFE))[0] // '',
         qr/can lose entries it acknowledged, with maxmemory-policy "allkeys-lru": a lost entry/,
         '[warn]: it can evict entries (allkeys-lru)');
    is($n1->stats->{redisUnsafe}, 1, 'stats: redisUnsafe 1');
    $n1->check_log_clean;
    $n1->cleanup;
}

# ============================================================ values not to be trusted

{
    my ($n1, $n2) = InfTest->fleet(log_level => 'info');
    my $BAD = qr/\[error\].*holds a value that is not one the module wrote/;

    my @k0 = $n1->redis_keys('influencers:*');
    my $key = fresh('retry');
    check_new_job($n1->idem($key), 'node 1 accepts a key');
    my $rk = new_key($n1, @k0);
    ok($rk, 'its Redis key');
    my $v = $n1->redis('GET', $rk);
    is(length($v // ''), 96, 'an accepted entry: 96 bytes, A...');
    is(substr($v, 0, 1), 'A', "... tagged 'A'");

    # a Retry-After of 4294967295
    substr($v, 2 + 32 + 50, 4) = "\xff\xff\xff\xff";
    $n1->redis('SET', $rk, $v);
    my $r = $n2->idem($key);
    check_error($r, 503, 'UNAVAILABLE', undef,
                'Retry-After 4294967295 in Redis: node 2 answers 503, never replays it');
    unlike($r->raw, qr/4294967295/, '... the value is not in the answer');
    like(($n2->log_lines($BAD))[0] // '', qr/\(96 bytes, 'A'\): the key is answered as if Redis could not be reached/,
         '... [error] says the value is not the module\'s');

    # bytes of another program
    $n1->redis('SET', $rk, 'hello');
    check_error($n2->idem($key), 503, 'UNAVAILABLE', undef,
                'a value of another program: 503');

    # a claim in doubt whose job has a gender the module does not know
    my @k1 = $n1->redis_keys('influencers:*');
    my $ck = fresh('claim');
    $n1->set_backend(delay => 3);
    my $sock = $n1->idem_async($ck);
    $n1->wait_backend_requests($n1->forwards + 1);
    my $crk = new_key($n1, @k1);
    my $cv = $n1->redis('GET', $crk);
    is(length($cv // ''), 112, 'a claim: 112 bytes');
    $cv = 'U' . substr($cv, 1);
    substr($cv, 2 + 16 + 8 + 32 + 48, 1) = "\x09";
    $n1->redis('SET', $crk, $cv, 'PX', 60000);
    my $n0 = $n1->forwards;
    check_error($n2->idem($ck), 503, 'UNAVAILABLE', undef,
                'a claim in doubt with gender 9: 503, its job not sent again');
    is($n1->forwards, $n0, '... nothing forwarded');
    finish_async($sock, 5);
    $n1->set_backend;

    cmp_ok($n2->stats->{redisBadValues}, '>=', 3, 'stats: redisBadValues counts them');
    cmp_ok($n2->count_log($BAD), '<=', 2, 'logged at most once a minute per worker (2 workers)');

    # ------------------------------------------------ the previous version's values

    my @k2 = $n1->redis_keys('influencers:*');
    my $lk = fresh('legacy');
    my $first = $n1->idem($lk);
    my $j = check_new_job($first, 'a key accepted');
    my $lrk = new_key($n1, @k2);
    my $now = $n1->redis('GET', $lrk);
    # 'D' fingerprint job_id influencer_id retry_after(4) expires_ms(8)
    my $old = 'D' . substr($now, 2, 32) . substr($now, 34, 32)
              . substr($now, 84, 4) . substr($now, 88, 8);
    $n1->redis('SET', $lrk, $old);
    check_replay($n2->idem($lk), $first, 'a \'D\' value of the previous version replays, byte for byte');
    my $fk = fresh('legacy-f');
    my @k3 = $n1->redis_keys('influencers:*');
    check_new_job($n1->idem($fk), 'another key accepted');
    my $frk = new_key($n1, @k3);
    my $fv = $n1->redis('GET', $frk);
    $n1->redis('SET', $frk, 'F' . ("\x01" x 16) . substr($fv, 2, 32), 'PX', 60000);
    check_error($n2->idem($fk), 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'an \'F\' value of the previous version: in flight, 409');
    $_->check_log_clean for $n1, $n2;
}

# ============================================================ a server that echoes the password

{
    my $t = InfTest->new(log_level => 'info');
    my $PW = "S3cret-pw-$$-echo";
    my $port = $t->port('fake');
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                    Listen => 16, ReuseAddr => 1, Proto => 'tcp')
        or die "listen: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # every command answered with an error that quotes its arguments
        $SIG{ALRM} = sub { POSIX::_exit(0) };
        alarm 30;
        while (my $c = $srv->accept) {
            binmode $c;
            my $buf = '';
            while (sysread($c, $buf, 65536, length $buf)) {
                while ($buf =~ s/^\*(\d+)\r\n//) {
                    my @args;
                    for (1 .. $1) {
                        $buf =~ s/^\$(\d+)\r\n// or last;
                        push @args, substr($buf, 0, $1, '');
                        substr($buf, 0, 2, '');
                    }
                    syswrite $c, "-WRONGPASS invalid username-password pair: @args\r\n";
                }
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    $t->{fake_pid} = $pid;
    close $srv;
    $t->write_directory;
    $t->conf($t->default_conf(server => STATS_LOCATION,
                              redis => "zone=jobs 127.0.0.1:%%PORT_FAKE%% password=$PW"));
    $t->start_backend;
    $t->run;
    check_error($t->idem(fresh('echo')), 503, 'UNAVAILABLE', undef,
                'a server that refuses AUTH: 503');
    $t->idem(fresh('echo')) for 1 .. 3;
    $t->stop;
    my $log = $t->error_log;
    like($log, qr/\[error\].*Redis at 127\.0\.0\.1:\d+ refused AUTH: WRONGPASS/,
         '[error] ... refused AUTH: WRONGPASS (Redis\'s code only)');
    unlike($log, qr/\Q$PW\E/, 'the password is nowhere in error.log');
    unlike($log, qr/username-password pair/, 'nor the text of the refusal');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    $t->cleanup;
}

done_testing;
