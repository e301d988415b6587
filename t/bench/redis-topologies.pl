#!/usr/bin/perl

# The Redis side of t/bench/redis-topologies.sh: starts, with
# t/lib/RedisTopo.pm, the topologies that script measures, writes what the
# gateways and the script need to know about them to a file the shell
# sources, then waits until it is told to stop (SIGTERM, SIGINT, SIGHUP,
# or PARENT_PID, by default the process that started it, going away) and stops every process it started, by pid
# (RedisTopo's stop(), END block and watchdog), and removes its temp dir
# (InfTest's END block).
#
#   perl t/bench/redis-topologies.pl ENV_FILE [PARENT_PID]
#
# Topologies, every data node as RedisTopo runs them (AOF appendfsync
# everysec, noeviction, no RDB), no passwords:
#   plain    one primary, used over its plaintext port only
#   tls      one primary over TLS (a CA and a server certificate for
#            IP:127.0.0.1 and DNS:localhost made with openssl); the
#            harness's INFO goes to its plaintext port
#   cluster  3 primaries, no replicas
#   repl     one primary and one replica (no sentinels), for wait=N
#
# ENV_FILE gets shell assignments:
#   plain_port plain_pids plain_info
#   tls_port tls_ca tls_pids tls_info
#   cluster_seeds cluster_pids cluster_info
#   repl_port repl_replica_port repl_pids repl_info
# where *_info is the space-separated plaintext ports to ask INFO of (every
# server of that topology) and *_pids their pids.  Progress goes to stderr.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../lib";
use Time::HiRes ();
use InfTest ();
use RedisTopo qw(:all);

my $out = shift or die "usage: $0 ENV_FILE [PARENT_PID]\n";
my $parent = shift // getppid();
die "redis-topologies.pl: no process $parent\n" unless kill 0, $parent;

my $missing = RedisTopo::tools_missing();
die "redis-topologies.pl: $missing\n" if $missing;

my $stop = 0;
$SIG{$_} = sub { $stop = 1 } for qw(TERM INT HUP);

my $t = InfTest->new;
my $t0 = Time::HiRes::time();
sub took { return sprintf '%.1f s', Time::HiRes::time() - $t0; }

my $ca = make_ca($t, 'bench-ca');
my $cert = make_cert($t, 'bench-server', ca => $ca,
                     san => ['DNS:localhost', 'IP:127.0.0.1']);
my %tls = (cert => $cert->{cert}, key => $cert->{key}, ca => $ca->{cert});

my $plain = start_redis_tls($t, name => 'plain', %tls, plain_port => 1);
my $tlss = start_redis_tls($t, name => 'tls', %tls, plain_port => 1);
print STDERR "redis-topologies.pl: plain and TLS primaries up (" . took() . ")\n";

my $repl = start_sentinel_group($t, name => 'repl', replicas => 1,
                                sentinels => 0);
my @data = grep { $_->{kind} eq 'data' } @{ $repl->nodes };
my ($primary, $replica);
for my $n (@data) {
    my $i = RedisTopo::_fields($repl->command($n->{port}, 'INFO', 'replication'));
    ($i->{role} // '') eq 'master' ? ($primary = $n) : ($replica = $n);
}
die "redis-topologies.pl: no primary and replica in the repl group\n"
    unless $primary && $replica;
print STDERR "redis-topologies.pl: primary and replica up (" . took() . ")\n";

my $cl = start_cluster($t, name => 'cluster', primaries => 3, replicas => 0);
my @cnodes = @{ $cl->nodes };
print STDERR "redis-topologies.pl: cluster of 3 primaries up (" . took() . ")\n";

my %env = (
    plain_port        => $plain->plain_port,
    plain_pids        => join(' ', $plain->pids),
    plain_info        => $plain->plain_port,
    tls_port          => $tlss->port,
    tls_ca            => $ca->{cert},
    tls_pids          => join(' ', $tlss->pids),
    tls_info          => $tlss->plain_port,
    cluster_seeds     => join(',', $cl->seeds),
    cluster_pids      => join(' ', $cl->pids),
    cluster_info      => join(' ', map { $_->{plain_port} } @cnodes),
    repl_port         => $primary->{port},
    repl_replica_port => $replica->{port},
    repl_pids         => join(' ', $repl->pids),
    repl_info         => join(' ', map { $_->{port} } @data),
);
open my $fh, '>', "$out.tmp" or die "redis-topologies.pl: $out.tmp: $!\n";
print {$fh} "$_='$env{$_}'\n" for sort keys %env;
close $fh or die "redis-topologies.pl: $out.tmp: $!\n";
rename "$out.tmp", $out or die "redis-topologies.pl: $out: $!\n";

# until told to stop, or orphaned
Time::HiRes::sleep(0.2) while !$stop && kill 0, $parent;
my @logs = sort glob($t->dir . '/redistopo/nodes/*/*/redis.log');
my %size = map { $_ => -s $_ } @logs;
$_->stop for $cl, $repl, $tlss, $plain;
print STDERR "redis-topologies.pl: every Redis stopped\n";

# what the servers logged at warning level once they were up and before
# they were told to stop (a slow AOF fsync, say), counted by message, but
# for the settling of a new cluster and a replica's first sync
my $warnings = 0;
for my $log (@logs) {
    my ($node) = $log =~ m{/nodes/([^/]+/[^/]+)/redis\.log$};
    open my $in, '<', $log or next;
    my ($up, %count) = (0);
    while (my $line = <$in>) {
        last if tell($in) > $size{$log};
        $up = 1 if $line =~ /Ready to accept connections/;
        next unless $up && $line =~ /^\d+:[A-Z] [^#]* # (.*)$/;
        my $msg = $1;
        next if $msg =~ /configEpoch|Diskless rdb transfer|Cluster state changed|IP address for this node updated/;
        $msg =~ s/\d+/N/g;
        $count{$msg}++;
    }
    close $in;
    printf STDERR "redis-topologies.pl: %s logged %d x \"%s\"\n",
        $node, $count{$_}, $_ for sort keys %count;
    $warnings += keys %count;
}
print STDERR "redis-topologies.pl: no warning in the servers' logs\n"
    unless $warnings;
exit 0;
