#!/usr/bin/perl

# Faults under load (issue 8, part 3): a worker SIGKILLed while clients
# send new keys (four kills, spread over the load, each of the worker
# holding the most client connections; the backend takes 20 ms, so that
# its requests are mostly being forwarded).  The killed worker's clients
# see their connection break; its claims stay in flight until the lease
# (2 s, above the backend location's timeouts) runs out.
#
# Asserted: every answer under load is a 202 (a broken connection is the
# only other outcome); every 202 forwarded exactly once; no key forwarded
# twice during the load; once the lease has run out no key is stuck: every
# key whose connection broke is a 202 when sent again, a replay when its
# worker had finished it (then no new forward), a new job otherwise; the
# zone has nothing in flight.  A key whose forward reached the backend
# before its worker died is forwarded again by that retry: the lease's
# price (CONTRACT 3), counted and reported, not an error.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use FaultLoad;

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $WORKERS = 3;
my $CLIENTS = 6;
my $SECONDS = 4;
my $KILLS   = 4;
my $LEASE   = 2;

my $DELAY   = 0.02;   # the backend's answer time: most of a request is
                      # its forward, so that a kill finds forwards in flight

my ($t, $base) = FaultLoad::gateway(workers => $WORKERS, lease => $LEASE,
                           control => { delay => $DELAY });

# the number of established client connections (to the main port) that a
# process holds: the socket inodes of /proc/net/tcp against its fds
sub client_conns {
    my ($pid) = @_;
    my $port = sprintf('%04X', $t->port);
    my %inode;
    if (open my $fh, '<', '/proc/net/tcp') {
        while (my $l = <$fh>) {
            my @f = split ' ', $l;
            next unless @f > 9 && $f[1] =~ /:$port$/ && $f[3] eq '01';
            $inode{ $f[9] } = 1;
        }
        close $fh;
    }
    my $n = 0;
    opendir my $dh, "/proc/$pid/fd" or return 0;
    for my $fd (readdir $dh) {
        my $l = readlink "/proc/$pid/fd/$fd" // next;
        $n++ if $l =~ /^socket:\[(\d+)\]$/ && $inode{$1};
    }
    closedir $dh;
    return $n;
}


# ---------------------------------------------------------------- the load

my $start = Time::HiRes::time() + 0.3;
my $load = FaultLoad->start($t, name => 'k', clients => $CLIENTS,
                            seconds => $SECONDS, start => $start);
my (@killed, %killed_at, %victims);
for my $i (1 .. $KILLS) {
    sleep_until($start + 0.5 + ($i - 1) * ($SECONDS - 1.2) / ($KILLS - 1));
    my @w = $t->worker_pids;
    next unless @w >= $WORKERS;
    # the worker with the most client connections (ties: any of them)
    my %conns = map { $_ => client_conns($_) } @w;
    my ($victim) = sort { $conns{$b} <=> $conns{$a} || rand() <=> 0.5 } @w;
    $victims{ $conns{$victim} }++;
    if (kill 'KILL', $victim) {
        push @killed, $victim;
        $killed_at{$victim} = Time::HiRes::time();
    }
    # the master starts another (bounded wait)
    my $end = Time::HiRes::time() + 3;
    Time::HiRes::sleep(0.02)
        while Time::HiRes::time() < $end && $t->worker_pids < $WORKERS;
}
is(scalar @killed, $KILLS, "$KILLS workers SIGKILLed under load");
note('client connections of the killed workers: '
     . join(', ', map { "$_ ($victims{$_} times)" } sort keys %victims));

my @r = $load->finish;
my $load_end = Time::HiRes::time();
FaultLoad::check_ended($load, @r);

my @odd = grep { $_->{status} && $_->{status} != 202 } @r;
is(scalar @odd, 0, 'every answer under load is a 202') or diag(FaultLoad::sample(@odd));
my @broken = grep { $_->{err} ne '-' } @r;
my @hung = grep { $_->{err} eq 'timeout' } @broken;
is(scalar @hung, 0, 'no request hung') or diag(FaultLoad::sample(@hung));
cmp_ok(scalar @broken, '<=', $KILLS * $CLIENTS,
       'broken connections: at most one per client per kill (' . scalar(@broken) . ')');
cmp_ok(scalar @broken, '>=', 1, 'the kills broke connections with requests in flight');

is(scalar(my @w = $t->worker_pids), $WORKERS, "$WORKERS workers run again");

# ---------------------------------------------------------------- forwards

my @acc = grep { $_->{status} == 202 } @r;
my $fw0 = FaultLoad::check_forwarded_once($t, \@acc);
my %sent = map { $_->{key} => 1 } @r;
is(scalar(grep { /^k-/ && !$sent{$_} } keys %$fw0), 0, 'every forward is of a key that was sent');

# before the lease has run out, a broken key still forwarded may be in
# flight (409): not retried here.  After it, none is stuck, and each is
# its one job (ISSUE 14): the killed worker's forward may have reached the
# backend, so the retry sends that same job again, or replays it where it
# had been accepted.
sleep_until($load_end + $LEASE + 0.5);

my $fw_before = FaultLoad::forwards_by_marker($t);
my $how = FaultLoad::check_retry_in_doubt($t,
    'after the lease, every key whose connection broke is',
    map { $_->{key} } @broken);
note('the broken keys sent again: ' . FaultLoad::tally_text($how));

my $jobs = FaultLoad::jobs_by_marker($t);
my @two = grep { /^k-/ && keys %{ $jobs->{$_} } > 1 } keys %$jobs;
is(scalar @two, 0, 'no key has two jobs at the backend');
my $fw1 = FaultLoad::forwards_by_marker($t);
my %broken_key = map { $_->{key} => 1 } @broken;
my @moved = grep { /^k-/ && !$broken_key{$_} && $fw1->{$_} != ($fw0->{$_} // 0) } keys %$fw1;
is(scalar @moved, 0, 'no other key was forwarded again');
my %how = %$how;

my $s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight') or diag(json_encode($s));
my $exp = $s->{leaseExpiries} - $base->{leaseExpiries};
cmp_ok($exp, '<=', scalar @broken, "stats: lease expiries ($exp) no more than the broken requests");
cmp_ok($exp, '>=', 1, 'stats: claims of killed workers ran out their lease');
note(sprintf('RESULT kill: %d requests, %d kills, %d broken connections (%s); after the lease: %s; lease expiries %d',
             scalar @r, scalar @killed, scalar @broken,
             FaultLoad::tally_text(FaultLoad::tally(@broken)),
             FaultLoad::tally_text(\%how), $exp));

# ---------------------------------------------------------------- the log

$t->stop;
my $log = $t->error_log . ($t->read_file('stderr.log') // '');
my @sig = $log =~ /exited on signal (\d+)/g;
is(scalar(grep { $_ == 9 } @sig), scalar @killed, 'error.log: the killed workers, each once');
is(scalar(grep { $_ != 9 } @sig), 0, 'no worker died of a signal but our SIGKILLs')
    or diag(join "\n", grep { /exited on signal (?!9\b)/ } split /\n/, $log);
my @bad = grep { /\[(?:alert|emerg|crit|error)\]|Sanitizer|==\d+==ERROR/
                 && !/exited on signal 9|was locked by/ } split /\n/, $log;
is(scalar @bad, 0, 'error.log: nothing at [error] or above but the killed workers\'')
    or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);

done_testing;
