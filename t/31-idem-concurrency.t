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
use IO::Socket::INET;
use IO::Select;
use POSIX ();
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

# ---------------------------------------------------------------- clients

# One burst: $n forked clients connect, wait at the gate (a pipe whose
# write end the parent closes), then send $bytes and read the answer.
# Returns the answers (InfTest::Response, with ->{timed_out}) and the
# number of clients that did not report.
sub burst {
    my ($bytes, $n, $late) = @_;

    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    pipe(my $gate_r, my $gate_w) or die "pipe: $!";
    pipe(my $res_r, my $res_w) or die "pipe: $!";

    my @kids;
    for my $i (1 .. $n) {
        my $pid = fork;
        if (!defined $pid) {
            diag("fork: $!");
            last;
        }
        if ($pid == 0) {
            close $ready_r; close $gate_w; close $res_r;
            my $line = eval {
                local $SIG{PIPE} = 'IGNORE';
                my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $t->port, Proto => 'tcp', Timeout => 5)
                    or die "connect: $!\n";
                binmode $sock;
                syswrite $ready_w, 'r';
                my $x;
                sysread $gate_r, $x, 1;         # EOF: go
                # some clients come late, after the first answer
                Time::HiRes::sleep($late) if $late && $i % 5 == 0;
                my $off = 0;
                while ($off < length $bytes) {
                    my $w = syswrite($sock, $bytes, length($bytes) - $off, $off);
                    die "write: $!\n" unless defined $w;
                    $off += $w;
                }
                # the parent parses the bytes read (within 10 s)
                my $r = finish_async($sock, 10);
                json_encode({ raw => $r->raw, timed_out => $r->{timed_out} });
            } // json_encode({ raw => '', error => "$@" });
            # one line, one write (a pipe write under PIPE_BUF is atomic)
            syswrite $res_w, "$line\n";
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    close $ready_w; close $gate_r; close $res_w;

    # everyone connected (bounded), then open the gate
    my $ready = 0;
    my $sel = IO::Select->new($ready_r);
    my $end = Time::HiRes::time() + 10;
    while ($ready < @kids && (my $left = $end - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $got = sysread($ready_r, my $x, 1024);
        last unless $got;
        $ready += $got;
    }
    close $gate_w;

    # the answers (bounded)
    my $text = '';
    $sel = IO::Select->new($res_r);
    $end = Time::HiRes::time() + 15;
    while ((my $left = $end - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $got = sysread($res_r, $text, 65536, length $text);
        next if !defined $got && $!{EINTR};
        last unless $got;
    }
    close $res_r; close $ready_r;

    # every client process is waited for, by pid (killed if it lingers)
    my %left = map { $_ => 1 } @kids;
    $end = Time::HiRes::time() + 5;
    while (%left && Time::HiRes::time() < $end) {
        for my $p (keys %left) {
            delete $left{$p} if waitpid($p, POSIX::WNOHANG()) != 0;
        }
        Time::HiRes::sleep(0.01) if %left;
    }
    for my $p (keys %left) {
        kill 'KILL', $p;
        waitpid $p, 0;
    }

    my @answers;
    for my $l (split /\n/, $text) {
        my $j = json_decode($l) or next;
        my $r = InfTest::Response->parse($j->{raw});
        $r->{timed_out} = $j->{timed_out};
        $r->{error} = $j->{error} if $j->{error};
        push @answers, $r;
    }
    return ($ready, @answers);
}

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
    my ($ready, @a) = burst(key_request($key, $body), $CLIENTS, 2 * $DELAY);

    subtest "round $round: $CLIENTS parallel requests with key $key" => sub {
        is($ready, $CLIENTS, 'every client connected before the gate opened');
        is(scalar @a, $CLIENTS, 'every client got an answer');
        is(scalar(grep { $_->{timed_out} || $_->{error} } @a), 0,
           'no request timed out or failed');

        my @acc = grep { $_->status == 202 } @a;
        my @busy = grep { $_->status == 409 } @a;
        my @other = grep { $_->status != 202 && $_->status != 409 } @a;
        is(scalar @other, 0, 'every answer is a 202 or a 409')
            or diag(join "\n", map { $_->summary } @other[0 .. ($#other < 4 ? $#other : 4)]);

        my @orig = grep { !defined $_->header('idempotent-replayed') } @acc;
        my @repl = grep { ($_->header('idempotent-replayed') // '') eq 'true' } @acc;
        is(scalar @orig, 1, 'exactly one original 202');
        is(scalar(@orig) + scalar(@repl), scalar @acc,
           'every other 202 is marked Idempotent-Replayed: true');

        my %bodies = map { $_->body => 1 } @acc;
        is(scalar keys %bodies, 1, 'all 202 bodies are byte-identical');
        my ($job) = @acc ? ($acc[0]->body =~ ACCEPT_RE) : ('');

        my @fw = $t->backend_requests;
        is(scalar @fw - $n0, 1, 'exactly one forward reached the backend');
        is($fw[-1]{h}{'idempotency-key'}[0], $job,
           'the forwarded job is the one answered') if @fw > $n0;

        my @bad409 = grep {
            my $j = $_->json;
            !(ref $j eq 'HASH' && ($j->{error}{code} // '') eq 'IDEMPOTENCY_IN_PROGRESS'
              && ($_->header('retry-after') // '') =~ /^\d+$/)
        } @busy;
        is(scalar @bad409, 0, 'every 409 is IDEMPOTENCY_IN_PROGRESS with Retry-After');

        my %rid = map { ($_->header('x-request-id') // '') => 1 } @a;
        is(scalar keys %rid, scalar @a, 'every answer has its own X-Request-Id');

        $total_409 += @busy;
        $total_replays += @repl;
    };

    # the key is answered now: a second burst gets nothing but replays
    if ($round % 3 == 1) {
        my ($ready2, @b) = burst(key_request($key, $body), $CLIENTS);
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
        my ($ready3, @c) = burst(key_request($key, '{"prompt":"other"}'), 20);
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
