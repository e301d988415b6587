#!/usr/bin/perl

# CONTRACT 3: nothing accepted is lost to a crash.  Every entry accepted
# more than 2 seconds before a kill -9 of every nginx process replays once
# nginx is started again, byte for byte; a record torn by the crash is
# skipped, never read wrong.  And what a replay reads round-trips at every
# value the directives accept (Retry-After up to 1d), a state file that is
# a FIFO never hangs nginx, and entries read back never outlive the ttl
# configured now.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes ();
use Digest::SHA ();
use Compress::Zlib ();
use File::Temp ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

sub journal_bytes {
    my ($t, $name) = @_;
    my $n = 0;
    $n += -s $_ for glob($t->path("$name.journal.*"));
    return $n;
}

# ================================================================ kill -9

my $t = InfTest->setup(log_level => 'info', workers => 2,
    zone => 'zone=jobs:1m org_share=100% state=%%TESTDIR%%/jobs.state',
    location => 'influencers_retry_after 1d;',
    server => STATS_LOCATION);

my %first;
my @bodies = ('{}', '{"prompt":"crash survivor"}', '{"gender":"male"}',
              qq({"prompt":"caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80"}));
for my $i (1 .. 24) {
    my $body = $bodies[$i % @bodies];
    $first{$i} = [ $body, $t->idem("crash-$i", body => $body) ];
}
is(scalar(grep { $_->[1]->status == 202 } values %first), 24, '24 keys accepted');
is($first{1}[1]->header('retry-after'), '86400',
   'influencers_retry_after 1d: the first answer says Retry-After: 86400');
check_replay($t->idem('crash-1', body => $first{1}[0]), $first{1}[1],
             'a replay before the crash says 86400 too (no 16-bit cut)');
ok(journal_bytes($t, 'jobs.state') >= 24 * 2 * 112,
   'the journal holds the 24 entries: each claim, then its acceptance');
ok(!-e $t->path('jobs.state'), 'no snapshot yet: only the journal');

Time::HiRes::sleep(2.2);
my $n0 = $t->forwards();
ok($t->kill9, 'kill -9 of the master and both workers');

$t->run;
like(($t->log_lines(qr/entries loaded from/))[-1] // '', qr/24 entries loaded from/,
     'started again: 24 entries loaded from the state file and its journal');
my $ok = 0;
for my $i (1 .. 24) {
    my ($body, $r1) = @{ $first{$i} };
    my $r = $t->idem("crash-$i", body => $body);
    $ok++ if ($r->header('idempotent-replayed') // '') eq 'true'
             && $r->body eq $r1->body
             && $r->header('retry-after') eq $r1->header('retry-after')
             && $r->header('location') eq $r1->header('location')
             && $r->header('idempotency-expires') eq $r1->header('idempotency-expires');
}
is($ok, 24, 'after the crash: every key replays byte for byte, same headers');
check_replay($t->idem('crash-7', body => $first{7}[0]), $first{7}[1],
             'after the crash: one replay in full');
check_error($t->idem('crash-2', body => '{"prompt":"other"}'), 422, 'IDEMPOTENCY_KEY_REUSED',
            undef, 'after the crash: the fingerprint is still known');
is($t->forwards(), $n0, 'nothing forwarded again');
ok(-s $t->path('jobs.state'), 'the start wrote the journal into a snapshot');
is(journal_bytes($t, 'jobs.state'), 0, '... and emptied the journal');

# ================================================================ a record torn by the crash

{
    my $b = '{"prompt":"before the tear"}';
    my $r1 = $t->idem('torn-1', body => $b);
    check_new_job($r1, 'torn-1: 202', retry_after => 86400);
    ok($t->kill9, 'kill -9 again');
    my ($seg) = grep { -s $_ } glob($t->path('jobs.state.journal.*'));
    ok($seg, 'the journal segment that holds torn-1');
    # the first 60 bytes of a record, as a write cut short would leave
    open my $fh, '>>:raw', $seg or die "$seg: $!";
    print $fh substr(pack('V', 0x4a464e49) . ("\xab" x 200), 0, 60);
    close $fh;
    my $before = $t->count_log(qr/damaged or torn/);
    $t->run;
    is($t->count_log(qr/\[warn\].*1 damaged or torn stretches of "[^"]+journal/), $before + 1,
       'the torn record is reported ([warn]) and skipped');
    check_replay($t->idem('torn-1', body => $b), $r1, 'the whole record before it replays',
                 status => 202);
    check_replay($t->idem('crash-3', body => $first{3}[0]), $first{3}[1],
                 'and the snapshot\'s entries too', status => 202);
}

# ================================================================ graceful stop

{
    my $r1 = $t->idem('graceful-1', body => '{}');
    check_new_job($r1, 'graceful-1: 202', retry_after => 86400);
    $t->stop;
    like(($t->log_lines(qr/entries saved to/))[-1] // '', qr/\[notice\].* 2[67] entries saved to/,
         'a graceful stop writes the snapshot');
    is(journal_bytes($t, 'jobs.state'), 0, 'and empties the journal');
    $t->run;
    check_replay($t->idem('graceful-1', body => '{}'), $r1, 'graceful-1 replays after the start',
                 status => 202);
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ reload, then kill -9

# The workers of a reload write the journal through the descriptors the
# master opened at start: entries accepted before and after a reload,
# and while the reload's old workers still finish, all survive a crash.
{
    my $t = InfTest->setup(log_level => 'info', workers => 2,
        zone => 'zone=jobs:1m org_share=100% state=%%TESTDIR%%/reload.state',
        server => STATS_LOCATION);
    my %first;
    $first{"before-$_"} = $t->idem("before-$_") for 1 .. 6;
    ok($t->reload, 'a reload with the state file');
    $first{"after-$_"} = $t->idem("after-$_") for 1 .. 6;
    ok($t->reload, 'and another');
    $first{"second-$_"} = $t->idem("second-$_") for 1 .. 6;
    is(scalar(grep { $_->status == 202 } values %first), 18,
       '18 keys accepted across two reloads');
    Time::HiRes::sleep(2.2);
    ok($t->kill9, 'kill -9 of the master and the workers');
    $t->run;
    my $ok = grep {
        my $r = $t->idem($_);
        ($r->header('idempotent-replayed') // '') eq 'true'
            && $r->body eq $first{$_}->body
    } sort keys %first;
    is($ok, 18, 'every key accepted before, between and after the reloads '
                . 'replays after the crash');
    $t->check_log_clean;
    $t->cleanup;
}

# ================================================================ Retry-After at every value

for my $ra ('0', '1', '65535', '65536', '86400') {
    my $t = InfTest->setup(log_level => 'info',
        zone => 'zone=jobs:1m state=%%TESTDIR%%/ra.state',
        location => "influencers_retry_after $ra;",
        server => STATS_LOCATION);
    my $r1 = $t->idem("ra-$ra");
    is($r1->header('retry-after'), $ra, "influencers_retry_after $ra: Retry-After: $ra");
    check_replay($t->idem("ra-$ra"), $r1, "influencers_retry_after $ra: the replay",
                 status => 202);
    ok($t->kill9, "influencers_retry_after $ra: kill -9");
    $t->run;
    check_replay($t->idem("ra-$ra"), $r1, "influencers_retry_after $ra: the replay after a crash",
                 status => 202);
    $t->check_log_clean;
    $t->cleanup;
}

# ================================================================ a FIFO at the state file's name

{
    my $t = InfTest->new(log_level => 'info');
    $t->write_directory;
    my $fifo = $t->path('fifo.state');
    POSIX::mkfifo($fifo, 0600) or die "mkfifo: $!";
    $t->conf($t->default_conf(zone => "zone=jobs:1m state=$fifo", server => STATS_LOCATION));

    my $t0 = Time::HiRes::time();
    my ($rc, $out) = $t->test_config;
    my $dt = Time::HiRes::time() - $t0;
    is($rc, 0, 'state= a FIFO: nginx -t answers') or diag($out);
    cmp_ok($dt, '<', 5, sprintf('state= a FIFO: nginx -t does not hang (%.2f s)', $dt));

    $t->start_backend;
    $t0 = Time::HiRes::time();
    my $ok = eval { $t->run; 1 };
    ok($ok, 'state= a FIFO: nginx starts') or diag($@);
    cmp_ok(Time::HiRes::time() - $t0, '<', 5, 'state= a FIFO: without waiting on it');
    if ($ok) {
        like(($t->log_lines(qr/is not a regular file/))[0] // '',
             qr/\[error\].*"\Q$fifo\E" is not a regular file, ignored/,
             'state= a FIFO: [error] ... is not a regular file, ignored');
        check_new_job($t->idem('fifo-1'), 'state= a FIFO: requests are served');
        $t->stop;
        ok(-p $fifo || -f $fifo, 'state= a FIFO: the stop did not block on it either');
    }
    $t->cleanup;
}

# ================================================================ entries never outlive the ttl

# A state file made by hand, of far-future entries: each is cut to the ttl
# configured now, so such a file cannot fill the zone for longer.

{
    my $TTL = 3;
    my $t = InfTest->new(log_level => 'info');
    $t->write_directory;
    $t->conf($t->default_conf(
        zone => "zone=jobs:1m ttl=${TTL}s state=%%TESTDIR%%/far.state",
        server => STATS_LOCATION));
    $t->start_backend;

    my $org = 'org_acme';
    my $path = '/v1/projects/' . P_FEMALE . '/influencers';
    my $fp = Digest::SHA::sha256("POST $path\n" . '{}');
    my $far = 4102444800000;    # 2100-01-01
    my @records;
    for my $i (1 .. 40) {
        my $key = Digest::SHA::sha256(chr(length $org) . $org . "far-$i");
        push @records, state_record(key => $key, fingerprint => $fp,
                              job_id => pack('n', 0) . pack('N', 0x01000000 + $i)
                                        . ("\x11" x 10),
                              inf_id => "\x22" x 16, expires => $far);
    }
    $t->write_file($t->path('far.state'), state_snapshot(@records));

    my $t0 = time;
    $t->run;
    is($t->stats()->{keyed}, 40, 'a hand-made file of 40 far-future entries loads');
    my $r = $t->idem('far-1');
    is($r->status, 202, 'far-1 replays ...');
    is($r->header('idempotent-replayed'), 'true', '... as a replay');
    my $exp = http_date($r->header('idempotency-expires') // '') // 0;
    cmp_ok($exp, '<=', $t0 + $TTL + 1,
           "... with an Idempotency-Expires cut to the ttl of ${TTL}s");
    Time::HiRes::sleep($TTL + 1.2);
    check_new_job($t->idem('far-2'), 'once the ttl has passed: far-2 is a new job');
    check_new_job($t->idem('far-40'), 'and far-40, the last of the file, too');
    $t->check_log_clean;
    $t->cleanup;
}

# ================================================================ a restore leaves room for new jobs

# ISSUE 14, case 6: a state file from a larger zone, restarted into a
# smaller one.  The newest entries load first, no org past nine tenths of
# its share, and a tenth of the records stays free: every org, the
# largest included, and every request without a key, are served at once.

{
    my $t = InfTest->new(log_level => 'info');
    $t->write_directory;
    $t->conf($t->default_conf(
        zone => 'zone=jobs:64k ttl=1h org_share=25% state=%%TESTDIR%%/small.state',
        server => STATS_LOCATION));
    $t->start_backend;

    my $path = '/v1/projects/' . P_FEMALE . '/influencers';
    my $gpath = '/v1/projects/' . P_GLOBEX . '/influencers';
    my $fp = Digest::SHA::sha256("POST $path\n" . '{}');
    my $gfp = Digest::SHA::sha256("POST $gpath\n" . '{}');
    my $base = (time + 3600) * 1000;
    my @records;
    # org_acme: 1,000 entries, one millisecond apart (newest: small-1)
    for my $i (1 .. 1000) {
        push @records, state_record(
            key => Digest::SHA::sha256(chr(length 'org_acme') . 'org_acme' . "small-$i"),
            fingerprint => $fp, org => 'org_acme',
            job_id => pack('n', 0) . pack('N', 0x01000000 + $i) . ("\x33" x 10),
            inf_id => "\x44" x 16, expires => $base - $i);
    }
    # org_globex: 20 entries, older than every one of org_acme's
    for my $i (1 .. 20) {
        push @records, state_record(
            key => Digest::SHA::sha256(chr(length 'org_globex') . 'org_globex' . "g-$i"),
            fingerprint => $gfp, org => 'org_globex',
            job_id => pack('n', 0) . pack('N', 0x02000000 + $i) . ("\x55" x 10),
            inf_id => "\x66" x 16, expires => $base - 5000 - $i);
    }
    $t->write_file($t->path('small.state'), state_snapshot(@records));
    $t->run;

    my $s = $t->stats;
    my $R = $s->{records};
    my $limit = $s->{orgLimit};
    my $acme = $limit - ($limit > 1 ? ($limit >= 20 ? int($limit / 10) : 1) : 0);
    note("$R records, an org's share $limit");
    is($s->{largestOrg}, $acme, "org_acme restored up to nine tenths of its share ($acme of $limit)");
    cmp_ok($s->{keyed}, '<=', $R - int($R / 10), 'a tenth of the records left free');
    is($s->{keyed}, $acme + 20, 'org_globex\'s 20 entries loaded too (older, but in its share)');
    like(($t->log_lines(qr/were not loaded/))[-1] // '',
         qr/\[warn\].*is too small for its state: ${\(1020 - $acme - 20)} entries were not loaded, the oldest first \(${\(1000 - $acme)} over their org's share of 25%, 0 past the room/,
         'the log says what was left out, and why');

    my $n0 = $t->forwards;
    check_new_job($t->idem('small-new'), 'org_acme, a new key: 202, at once');
    check_new_job($t->idem(undef), 'a request without a key: 202');
    check_new_job($t->idem('g-new', key => K_GLOBEX, project => P_GLOBEX),
                  'org_globex, a new key: 202');
    is($t->forwards, $n0 + 3, 'all three forwarded');
    my $r = $t->idem('small-1');
    is($r->header('idempotent-replayed'), 'true', 'org_acme\'s newest entry replays');
    check_new_job($t->idem('small-1000'), 'its oldest, left out, is a new job');
    $t->check_log_clean;
    $t->cleanup;
}

# ================================================================ one instance per state file

# ISSUE 14, case 7: a second nginx with the same state= path refuses to
# start, saying which file; the first one keeps its journal.

{
    my $shared = File::Temp::tempdir('inf-state-XXXXXXXX', TMPDIR => 1, CLEANUP => 1);
    my @t = map {
        my $x = InfTest->new(log_level => 'info');
        $x->write_directory;
        $x->conf($x->default_conf(zone => "zone=jobs:1m state=$shared/one.state",
                                  server => STATS_LOCATION));
        $x->start_backend;
        $x
    } 1 .. 2;
    $t[0]->run;
    my $first = $t[0]->idem('locked-1');
    check_new_job($first, 'the first instance accepts a key');
    my $ok = eval { $t[1]->run; 1 };
    ok(!$ok, 'a second instance with the same state file does not start');
    like($t[1]->error_log . ($t[1]->read_file('stderr.log') // ''),
         qr/\[emerg\].*influencers zone "jobs": the state file "\Q$shared\E\/one\.state" is in use by another nginx: two instances must not share a "state=" path/,
         '[emerg] names the file');
    ok(-s "$shared/one.state.journal.0", 'the first one\'s journal is untouched');
    ok($t[0]->kill9, 'kill -9 of the first instance');
    $t[0]->run;
    check_replay($t[0]->idem('locked-1'), $first, 'its entry replays after the crash',
                 status => 202);
    $t[0]->check_log_clean;
    $_->cleanup for @t;
}

done_testing;
