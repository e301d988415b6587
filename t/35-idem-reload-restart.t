#!/usr/bin/perl

# CONTRACT 3: entries survive `nginx -s reload`, and with a state file a
# stop and a start.  A reload that would change the zone's size (and so
# lose its entries) fails, the running gateway keeps its entries.  A
# damaged record is skipped and a foreign state file ignored, both reported.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t;
# ================================================================ reload

$t = InfTest->setup(log_level => 'info', zone => 'zone=jobs:1m',
                    location => 'influencers_retry_after 7s;', server => STATS_LOCATION);
{
    my $first = $t->idem('reload-1', body => '{"gender":"male","prompt":"before the reload"}');
    check_new_job($first, 'before the reload: 202', retry_after => 7);
    my $n0 = $t->forwards();
    my %old = map { $_ => 1 } $t->worker_pids;

    ok($t->reload(conf => $t->default_conf(zone => 'zone=jobs:1m',
            location => 'influencers_retry_after 9s;', server => STATS_LOCATION)),
       'nginx -s reload (HUP) with another influencers_retry_after');
    my @new = $t->worker_pids;
    ok(@new && !grep({ $old{$_} } @new), 'a new generation of workers');

    check_replay($t->idem('reload-1', body => '{"gender":"male","prompt":"before the reload"}'),
                 $first, 'after the reload: the entry replays as it was (Retry-After 7)', status => 202);
    check_error($t->idem('reload-1', body => '{"gender":"female"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef,
                'after the reload: its fingerprint is still known');
    check_new_job($t->idem('reload-2'), 'after the reload: a new key uses the new Retry-After',
              retry_after => 9);
    is($t->forwards(), $n0 + 1, 'only the new key was forwarded');
    my $s = $t->stats();
    is($s->{claims}, 2, 'stats: the counters survived the reload (claims 2)');
    is($s->{replays}, 1, 'stats: replays 1');
    is($s->{keyed}, 2, 'stats: two entries');

    ok($t->reload, 'a second reload');
    check_replay($t->idem('reload-1', body => '{"gender":"male","prompt":"before the reload"}'),
                 $first, 'after a second reload: still a replay', status => 202);

    # a claim in flight survives a reload: the new workers see it (409),
    # the old one finishes the forward, the new ones replay it
    {
        my $n1 = $t->forwards();
        $t->set_backend(delay => 2);
        my $sock = $t->idem_async('reload-fly', body => '{"prompt":"in flight"}');
        $t->wait_backend_requests($n1 + 1);
        ok($t->hup, 'a reload while a request is in flight');
        check_error($t->idem('reload-fly', body => '{"prompt":"in flight"}'), 409,
                    'IDEMPOTENCY_IN_PROGRESS', undef,
                    'the new workers see the claim of the old one: 409');
        my $first = finish_async($sock, 5);
        check_new_job($first, 'the old worker finishes the forward: 202', retry_after => 9);
        $t->set_backend;
        check_replay($t->idem('reload-fly', body => '{"prompt":"in flight"}'), $first,
                     'the new workers replay it', status => 202);
        is($t->forwards(), $n1 + 1, 'one forward');
        my $end = Time::HiRes::time() + 3;   # the old generation leaves
        Time::HiRes::sleep(0.05) while $t->worker_pids > 2 && Time::HiRes::time() < $end;
    }

    # a reload that changes the zone's size is refused
    %old = map { $_ => 1 } $t->worker_pids;
    my $before = $t->count_log(qr/cannot change size/);
    ok(!$t->reload(conf => $t->default_conf(zone => 'zone=jobs:2m',
            location => 'influencers_retry_after 9s;', server => STATS_LOCATION)),
       'a reload that changes the zone size (1m -> 2m) fails');
    Time::HiRes::sleep(0.3);
    is($t->count_log(qr/\[emerg\].*cannot change size/), $before + 1,
       'error.log: [emerg] ... cannot change size');
    is_deeply([ $t->worker_pids ], [ sort { $a <=> $b } keys %old ],
              'the running workers keep serving');
    ok($t->nginx_alive, 'the master is still running');
    check_replay($t->idem('reload-1', body => '{"gender":"male","prompt":"before the reload"}'),
                 $first, 'after the refused reload: the old entry still replays', status => 202);
    check_new_job($t->idem('reload-3'), 'after the refused reload: a new key works',
              retry_after => 9);

    # and a reload back to a valid configuration works again
    ok($t->reload(conf => $t->default_conf(zone => 'zone=jobs:1m', server => STATS_LOCATION)),
       'a reload keeping the size succeeds afterwards');
    check_replay($t->idem('reload-1', body => '{"gender":"male","prompt":"before the reload"}'),
                 $first, 'and the entry still replays', status => 202);
}
$t->check_log_clean(allow_emerg => 1);
{
    my @emerg = $t->log_lines(qr/\[emerg\]/);
    is(scalar(grep { !/cannot change size/ } @emerg), 0,
       'the only [emerg] lines are the refused size change');
}
$t->cleanup;

# ================================================================ restart with a state file

$t = InfTest->setup(log_level => 'info',
                    zone => 'zone=jobs:1m state=%%TESTDIR%%/jobs.state',
                    server => STATS_LOCATION);
my $state = $t->path('jobs.state');

# a fast stop (TERM), waited for by pid
sub term_stop {
    my $pid = $t->nginx_pid;
    kill 'TERM', $pid;
    my $end = Time::HiRes::time() + 5;
    my $done = 0;
    while (Time::HiRes::time() < $end) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $done = 1; last; }
        Time::HiRes::sleep(0.02);
    }
    $t->{nginx_pid} = undef if $done;   # reaped here: the harness must not signal it
    $t->stop;                           # the watchdog; nginx too if TERM did not end it
    return $done;
}

my %keep;
{
    my $b1 = qq({"prompt":"caf\xc3\xa9 \xe2\x80\x94 survives","gender":"non_binary"});
    my $b2 = '{"ageRange":"senior"}';
    $keep{s1} = [ $b1, P_FEMALE, $t->idem('state-1', body => $b1) ];
    $keep{s2} = [ $b2, P_MALE, $t->idem('state-2', body => $b2, project => P_MALE) ];
    check_new_job($keep{s1}[2], 'state-1: 202');
    check_new_job($keep{s2}[2], 'state-2: 202');
    check_new_job($t->idem(undef), 'a job without a key: 202');
    ok(!-e $state, 'no state file while running');

    $t->stop;
    ok(-s $state, 'a graceful stop (QUIT) wrote the state file');
    is($t->count_log(qr/\[notice\].*2 entries saved to/), 1, 'error.log: 2 entries saved');

    my $n0 = $t->forwards();
    $t->run;
    is($t->count_log(qr/\[notice\].*2 entries loaded from/), 1, 'error.log: 2 entries loaded');
    is($t->stats()->{keyed}, 2, 'stats: two entries after the start');
    for my $k (qw(s1 s2)) {
        my ($body, $project, $first) = @{ $keep{$k} };
        check_replay($t->idem("state-" . substr($k, 1), body => $body, project => $project),
                     $first, "after a stop and a start: state-" . substr($k, 1) . ' replays', status => 202);
    }
    check_error($t->idem('state-1', body => '{}'), 422, 'IDEMPOTENCY_KEY_REUSED', undef,
                'after the restart: the fingerprint is still known');
    is($t->forwards(), $n0, 'nothing forwarded after the restart');

    # a fast stop (TERM) writes it too
    my $b3 = '{"prompt":"fast stop"}';
    $keep{s3} = [ $b3, P_FEMALE, $t->idem('state-3', body => $b3) ];
    check_new_job($keep{s3}[2], 'state-3: 202');
    unlink $state;
    ok(term_stop(), 'a fast stop (TERM): nginx exited');
    ok(-s $state, 'the fast stop wrote the state file');
    $t->run;
    is($t->stats()->{keyed}, 3, 'stats: three entries after the start');
    check_replay($t->idem('state-3', body => $b3), $keep{s3}[2],
                 'after TERM and a start: state-3 replays', status => 202);
    check_replay($t->idem('state-1', body => $keep{s1}[0]), $keep{s1}[2],
                 'and state-1 still does (a second restart)', status => 202);
    is($t->forwards(), $n0 + 1, 'nothing forwarded but state-3');

    # a request in flight at a graceful stop is finished, then saved
    $t->set_backend(delay => 1);
    my $sock = $t->idem_async('state-fly', body => '{"prompt":"in flight at stop"}');
    $t->wait_backend_requests($n0 + 2);
    # QUIT, and read the answer (and close, as a client of Connection:
    # close does) while nginx shuts down; then wait for its exit
    kill 'QUIT', $t->nginx_pid;
    my $fly = finish_async($sock, 5);
    ok(!$fly->timed_out, 'the request in flight is answered during the graceful stop');
    $t->stop;
    check_new_job($fly, 'a request in flight at a graceful stop: finished, 202');
    $t->set_backend;
    $t->run;
    check_replay($t->idem('state-fly', body => '{"prompt":"in flight at stop"}'), $fly,
                 'after the start: it replays (saved after it finished)', status => 202);
    is($t->forwards(), $n0 + 2, 'one forward for it');
}

# ================================================================ expired entries are not kept

{
    my $main = $t;
    $t = InfTest->setup(log_level => 'info',
                        zone => 'zone=jobs:1m ttl=6s state=%%TESTDIR%%/short.state',
                        server => STATS_LOCATION);
    # short-old expires 0.5 s before the stop, short-new 3 s after it:
    # room for a slow stop and start on a loaded machine (with ttl=2s
    # short-new expired before a stop under ASan at a load of 16)
    my $old = $t->idem('short-old');
    check_new_job($old, 'short-old: 202');
    Time::HiRes::sleep(3.5);
    my $new = $t->idem('short-new');
    check_new_job($new, 'short-new: 202');
    Time::HiRes::sleep(3.0);
    $t->stop;
    is($t->count_log(qr/1 entries saved to/), 1, 'error.log: only the unexpired entry saved');
    $t->run;
    check_replay($t->idem('short-new'), $new, 'short-new replays after the restart', status => 202);
    my $again = $t->idem('short-old');
    check_new_job($again, 'short-old (expired before the stop) is a new job');
    isnt($again->body, $old->body, '... another job');
    $t->check_log_clean;
    $t->cleanup;
    $t = $main;
}

# ================================================================ another size across a restart

# the refused reload's advice: "stop and start nginx (with state= the
# entries survive)"
{
    my $main = $t;
    $t = InfTest->setup(log_level => 'info',
                        zone => 'zone=jobs:32k org_share=100% state=%%TESTDIR%%/size.state',
                        server => STATS_LOCATION);
    my %first;
    $first{$_} = $t->idem("size-$_") for 1 .. 10;
    is(scalar(grep { $_->status == 202 } values %first), 10, '32k zone: 10 entries');
    $t->stop;
    $t->conf($t->default_conf(zone => 'zone=jobs:1m org_share=100% state=%%TESTDIR%%/size.state',
                              server => STATS_LOCATION));
    $t->run;
    is($t->stats()->{keyed}, 10, 'restarted with 1m: the 10 entries loaded');
    my $ok = grep { my $r = $t->idem("size-$_"); ($r->header('idempotent-replayed') // '') eq 'true'
                    && $r->body eq $first{$_}->body } 1 .. 10;
    is($ok, 10, 'restarted with 1m: all 10 replay');

    $t->stop;
    $t->conf($t->default_conf(zone => 'zone=jobs:32k org_share=100% state=%%TESTDIR%%/size.state',
                              server => STATS_LOCATION));
    $t->run;
    is($t->stats()->{keyed}, 10, 'back to 32k: the 10 entries loaded (they fit)');

    # more entries than the smaller zone holds
    $t->stop;
    $t->conf($t->default_conf(zone => 'zone=jobs:1m org_share=100% state=%%TESTDIR%%/size.state',
                              server => STATS_LOCATION));
    $t->run;
    $first{$_} = $t->idem("size-$_") for 11 .. 200;
    is($t->stats()->{keyed}, 200, '1m zone: 200 entries');
    $t->stop;
    $t->conf($t->default_conf(zone => 'zone=jobs:32k org_share=100% state=%%TESTDIR%%/size.state',
                              server => STATS_LOCATION));
    my $before = $t->count_log(qr/damaged|not a state file|layout version/);
    $t->run;
    my $s = $t->stats();
    is($t->count_log(qr/damaged|not a state file|layout version/), $before,
       'a valid state file with more entries than a smaller zone holds is not "damaged"');
    my $room = $s->{records} - int($s->{records} / 10);
    is($s->{keyed}, $room,
       "restarted with 32k: as many entries as fit are loaded, a tenth of the $s->{records} records left free ($room)");
    my $r = $t->idem('size-200');
    is($r->header('idempotent-replayed'), 'true', 'the newest entry replays')
        or diag($r->summary);
    check_new_job($t->idem('size-after-restart'), 'a new key is accepted: there is room for new jobs');
    $t->check_log_clean;
    $t->cleanup;
    $t = $main;
}

# ================================================================ damaged and foreign files

# A state file never loads a wrong entry.  Each record carries its own
# checksum: a damaged or torn record is skipped and reported, and the
# others load.  A file that is not a state file, or one of another layout,
# is reported and ignored whole.

my $NOT_STATE = qr/is not a state file, ignored|has layout version \d+ and this module reads/;
my $SKIPPED = qr/damaged or torn stretches of "\Q$state\E" skipped/;

sub damaged_start {
    my ($what, $damage, $pattern, $line) = @_;
    $t->stop;
    ok(-s $state, "$what: (a state file to damage)");
    open my $fh, '<:raw', $state or die "$state: $!";
    my $data = do { local $/; <$fh> };
    close $fh;
    my $records = int((length($data) - 16) / 112);
    $data = $damage->($data);
    $t->write_file($state, $data);

    my $before = $t->count_log($pattern);
    my $ok = eval { $t->run; 1 };
    ok($ok, "$what: nginx starts") or diag($@);
    return unless $ok;
    my @l = $t->log_lines($pattern);
    is(scalar @l, $before + 1, "$what: reported once");
    like($l[-1] // '', $line, "$what: the log line says what was wrong");

    my $n0 = $t->forwards();
    my ($body, $project, $first) = @{ $keep{s1} };

    if ($pattern == $NOT_STATE) {
        is($t->stats()->{keyed}, 0, "$what: the zone starts empty");
        my $r = $t->idem('state-1', body => $body);
        check_new_job($r, "$what: state-1 creates a new job");
        isnt($r->body, $first->body, "$what: another job than before");
        is($t->forwards(), $n0 + 1, "$what: forwarded");
        $keep{s1}[2] = $r;
        return;
    }

    is($t->stats()->{keyed}, $records - 1,
       "$what: every other entry of the $records loads");
    my $r = $t->idem('state-1', body => $body);
    if (($r->header('idempotent-replayed') // '') eq 'true') {
        is($r->body, $first->body, "$what: state-1 replays byte for byte");
        is($t->forwards(), $n0, "$what: nothing forwarded");
    } else {
        check_new_job($r, "$what: state-1 (the damaged record) is a new job");
        is($t->forwards(), $n0 + 1, "$what: forwarded once");
        $keep{s1}[2] = $r;
    }
}

damaged_start('a truncated state file', sub { substr($_[0], 0, length($_[0]) - 7) },
              $SKIPPED, qr/\[warn\].*1 damaged or torn stretches of "\Q$state\E" skipped/);
damaged_start('a state file with a flipped byte', sub {
    my $d = $_[0];
    my $i = int(length($d) * 2 / 3);
    substr($d, $i, 1) = chr(ord(substr($d, $i, 1)) ^ 0x5a);
    return $d;
}, $SKIPPED, qr/\[warn\].*1 damaged or torn stretches of "\Q$state\E" skipped/);
damaged_start('a state file with a flipped header byte', sub {
    my $d = $_[0];
    substr($d, 1, 1) = chr(ord(substr($d, 1, 1)) ^ 0x01);
    return $d;
}, $NOT_STATE, qr/\[error\].*"\Q$state\E" is not a state file, ignored/);
damaged_start('a state file of the old layout (version 2)', sub {
    return pack('V6', 0x53464e49, 2, 432, 1, 0, 0) . ("\0" x 432);
}, $NOT_STATE, qr/\[error\].*state file "\Q$state\E" has layout version 2 and this module reads version 5: its entries are not loaded/);
damaged_start('a state file of an old layout (version 3, 128-byte records)', sub {
    return pack('V4', 0x53464e49, 3, 128, 2) . pack('V', 0x4a464e49) . ("\0" x 252);
}, $NOT_STATE, qr/\[error\].*state file "\Q$state\E" has layout version 3 and this module reads version 5: its entries are not loaded/);
damaged_start('a state file of the previous layout (version 4, 96-byte records)', sub {
    return pack('V4', 0x53464e49, 4, 96, 2) . pack('V', 0x4a464e49) . ("\0" x 188);
}, $NOT_STATE, qr/\[error\].*state file "\Q$state\E" has layout version 4 and this module reads version 5: its entries are not loaded/);
damaged_start('a foreign file (random bytes)', sub {
    return join '', map { chr int rand 256 } 1 .. 4096;
}, $NOT_STATE, qr/\[error\].*"\Q$state\E" is not a state file, ignored/);
damaged_start('a foreign file (text)', sub {
    return "{\"entries\":[]}\n" x 20;
}, $NOT_STATE, qr/\[error\].*"\Q$state\E" is not a state file, ignored/);
damaged_start('an empty state file', sub { '' },
              $NOT_STATE, qr/\[error\].*"\Q$state\E" is not a state file, ignored/);

# a state file left as it was written still works after all this
{
    $t->stop;
    $t->run;
    check_replay($t->idem('state-1', body => $keep{s1}[0]), $keep{s1}[2],
                 'a clean stop and start: the newest state-1 replays', status => 202);
}

$t->check_log_clean;

done_testing;
