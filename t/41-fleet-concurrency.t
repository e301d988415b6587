#!/usr/bin/perl

# CONTRACT 6: one forward per (org, key) across every worker of every
# node.  Two gateway nodes (each a master and two workers) share one Redis;
# 50 clients (forked processes, released together through a pipe) send the
# same request with one key, half to each node, while the backend takes
# 200 ms.  Ten rounds, a fresh key each: exactly one forward per round,
# every other answer a 409 IDEMPOTENCY_IN_PROGRESS or a replay 202, never a
# 5xx; afterwards the key replays on both nodes and another body is 422.

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

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $ROUNDS  = 10;     # a fresh key each
my $CLIENTS = 50;     # parallel connections per burst, half on each node
my $DELAY   = 0.2;    # the backend's answer time
my $BUDGET  = 60;     # seconds for all rounds together

my ($n1, $n2) = InfTest->fleet(
    log_level => 'notice',
    zone      => 'zone=jobs:1m lease=10s',
    # what is tested is who wins a key, not Redis's speed: on a loaded
    # machine (ASan, builds beside) a reply took over the default 200ms
    redis     => 'timeout=2s',
    main      => 'worker_rlimit_nofile 1024;',
    control   => { delay => $DELAY },
);
my @PORTS = ($n1->port, $n2->port);

is(scalar(my @w1 = $n1->worker_pids), 2, 'node 1: a master and 2 workers');
is(scalar(my @w2 = $n2->worker_pids), 2, 'node 2: a master and 2 workers');

# ---------------------------------------------------------------- clients

# One burst: $n forked clients, client $i on node ($i % 2) + 1, connect,
# wait at the gate (a pipe whose write end the parent closes), then send
# $bytes and read the answer.  Returns the number of clients ready and
# the answers (InfTest::Response with ->{timed_out} and ->{node}).
sub burst {
    my ($bytes, $n, $late) = @_;

    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    pipe(my $gate_r, my $gate_w) or die "pipe: $!";
    pipe(my $res_r, my $res_w) or die "pipe: $!";

    my @kids;
    for my $i (1 .. $n) {
        my $node = $i % 2;
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
                    PeerPort => $PORTS[$node], Proto => 'tcp', Timeout => 5)
                    or die "connect: $!\n";
                binmode $sock;
                syswrite $ready_w, 'r';
                my $x;
                sysread $gate_r, $x, 1;         # EOF: go
                Time::HiRes::sleep($late) if $late && $i % 5 == 0;
                my $off = 0;
                while ($off < length $bytes) {
                    my $w = syswrite($sock, $bytes, length($bytes) - $off, $off);
                    die "write: $!\n" unless defined $w;
                    $off += $w;
                }
                my $r = finish_async($sock, 10);
                json_encode({ raw => $r->raw, timed_out => $r->{timed_out},
                              node => $node + 1 });
            } // json_encode({ raw => '', error => "$@", node => $node + 1 });
            syswrite $res_w, "$line\n";
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    close $ready_w; close $gate_r; close $res_w;

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
        $r->{node} = $j->{node};
        push @answers, $r;
    }
    return ($ready, @answers);
}

sub key_request { my ($key, $body) = @_; return $n1->idem_request($key, body => $body); }

sub first_lines {
    my @a = @_;
    return join "\n", map { "node $_->{node}: " . $_->summary } @a[0 .. ($#a < 4 ? $#a : 4)];
}

# ---------------------------------------------------------------- rounds

my $start = Time::HiRes::time();
my ($total_409, $total_replays, %winner) = (0, 0);
my $f_start = $n1->forwards;
my $e_start = $n1->redis_calls('evalsha', 'eval');

for my $round (1 .. $ROUNDS) {
    if (Time::HiRes::time() - $start > $BUDGET) {
        fail("round $round: over the time budget of $BUDGET s");
        last;
    }

    my $key = sprintf('fleet-conc-%02d-%d-%04x', $round, $$, int rand 65536);
    my $body = qq({"prompt":"fleet round $round"});
    my $n0 = $n1->forwards;

    # one client in five sends its request after the backend's delay
    my ($ready, @a) = burst(key_request($key, $body), $CLIENTS, 2 * $DELAY);

    subtest "round $round: $CLIENTS parallel requests with key $key on two nodes" => sub {
        is($ready, $CLIENTS, 'every client connected before the gate opened');
        is(scalar @a, $CLIENTS, 'every client got an answer');
        is(scalar(grep { $_->{timed_out} || $_->{error} } @a), 0,
           'no request timed out or failed');
        is(scalar(grep { $_->{node} == 1 } @a), $CLIENTS / 2, 'half of them on node 1');

        my @acc = grep { $_->status == 202 } @a;
        my @busy = grep { $_->status == 409 } @a;
        my @five = grep { $_->status >= 500 } @a;
        my @other = grep { $_->status != 202 && $_->status != 409 } @a;
        is(scalar @five, 0, 'no 5xx') or diag(first_lines(@five));
        is(scalar @other, 0, 'every answer is a 202 or a 409') or diag(first_lines(@other));

        my @orig = grep { !defined $_->header('idempotent-replayed') } @acc;
        my @repl = grep { ($_->header('idempotent-replayed') // '') eq 'true' } @acc;
        is(scalar @orig, 1, 'exactly one original 202 in the fleet')
            or diag(first_lines(@orig));
        is(scalar(@orig) + scalar(@repl), scalar @acc,
           'every other 202 is marked Idempotent-Replayed: true');
        $winner{$orig[0]{node}}++ if @orig == 1;

        my %bodies = map { $_->body => 1 } @acc;
        is(scalar keys %bodies, 1, 'all 202 bodies are byte-identical, whichever node');
        my %loc = map { ($_->header('location') // '') => 1 } @acc;
        is(scalar keys %loc, 1, 'one Location');
        my ($job) = @acc ? ($acc[0]->body =~ ACCEPT_RE) : ('');

        my @fw = $n1->wait_backend_requests($n0 + 1, timeout => 2);
        is(scalar @fw - $n0, 1, 'exactly one forward reached the backend');
        is($fw[-1]{h}{'idempotency-key'}[0], $job,
           'the forwarded job is the one answered') if @fw > $n0;

        my @bad409 = grep {
            my $j = $_->json;
            !(ref $j eq 'HASH' && ($j->{error}{code} // '') eq 'IDEMPOTENCY_IN_PROGRESS'
              && ($_->header('retry-after') // '') =~ /^\d+$/)
        } @busy;
        is(scalar @bad409, 0, 'every 409 is IDEMPOTENCY_IN_PROGRESS with Retry-After')
            or diag(first_lines(@bad409));

        my %rid = map { ($_->header('x-request-id') // '') => 1 } @a;
        is(scalar keys %rid, scalar @a, 'every answer has its own X-Request-Id');

        $total_409 += @busy;
        $total_replays += @repl;

        # the key is answered now: both nodes replay it, another body is 422
        if (@orig == 1) {
            for my $node ($n1, $n2) {
                check_replay($node->idem($key, body => $body), $orig[0],
                             'afterwards, node ' . ($node == $n1 ? 1 : 2) . ' replays it');
            }
            my $x = $n2->idem($key, body => '{"prompt":"other"}');
            is(($x->json || {})->{error}{code}, 'IDEMPOTENCY_KEY_REUSED',
               'another body: 422 IDEMPOTENCY_KEY_REUSED');
        }
        is($n1->forwards - $n0, 1, 'still exactly one forward for the key');
    };
}

my $elapsed = Time::HiRes::time() - $start;
note(sprintf('%d rounds in %.1f s; %d answers 409, %d replays; the original '
             . 'answered by node 1 in %d rounds, node 2 in %d',
             $ROUNDS, $elapsed, $total_409, $total_replays,
             $winner{1} // 0, $winner{2} // 0));

Time::HiRes::sleep(0.3);
is($n1->forwards - $f_start, $ROUNDS, "$ROUNDS keys, $ROUNDS forwards in all");
my $evals = $n1->redis_calls('evalsha', 'eval') - $e_start;
note("EVALSHA/EVAL calls for the $ROUNDS rounds: $evals");

for my $node ($n1, $n2) {
    my $s = $node->stats;
    my $name = $node == $n1 ? 'node 1' : 'node 2';
    is($s->{inflight}, 0, "$name: nothing left in flight");
    is($s->{redisFailures} // 0, 0, "$name: no redisFailures");
    note("$name stats: " . json_encode($s));
}

$_->check_log_clean for $n1, $n2;

done_testing;
