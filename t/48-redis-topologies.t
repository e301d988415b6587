#!/usr/bin/perl

# The Redis topologies of t/lib/RedisTopo.pm, for the TLS, Cluster and
# Sentinel tests to come, checked for real (no nginx here):
#
#   - TLS material: openssl verify takes a good certificate, says an
#     expired one has expired and refuses one of another CA;
#   - redis-server over TLS: served with the right CA (and on its plaintext
#     port, with the password), refused with another CA and with an expired
#     certificate; a certificate for another name is refused by a client
#     that checks names (s_client: redis-cli does not check them);
#     tls-auth-clients: refused without a client certificate, with an
#     expired one and with one of another CA, served with a good one; AOF
#     and noeviction;
#   - a Redis Cluster of 3 primaries and 3 replicas, over mutual TLS with
#     a password: the slots all covered, keys spread over the primaries
#     through redis-cli -c, each held by the owner of its slot;
#     slot_of_key() equal to CLUSTER KEYSLOT, hash tags included; a
#     reshard that takes its keys along; a primary killed and its replica
#     promoted; the killed node back as a replica; a coordinated CLUSTER
#     FAILOVER that makes it the primary again;
#   - a plain cluster (no TLS, no password, no replicas): up, SET through
#     redis-cli -c, stop_cluster();
#   - a Sentinel group of a primary, two replicas and three sentinels, with
#     passwords on both: SENTINEL FAILOVER, then a killed primary, followed
#     by every sentinel and keeping the data;
#   - a test process killed with SIGKILL: the watchdog stops its Redis and
#     removes its dir; stop() leaves no process.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest ();
use RedisTopo qw(:all);

my $missing = RedisTopo::tools_missing();
plan skip_all => $missing if $missing;

my $t = InfTest->new;
my @topologies;

sub elapsed { my ($t0) = @_; return sprintf '%.1f s', Time::HiRes::time() - $t0; }

# a process that runs and is not a zombie
sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    return $stat =~ /^\d+ \(.*\) Z /s ? 0 : 1;
}

# a key of the given slot (through a hash tag)
sub key_in_slot {
    my ($slot, $prefix) = @_;
    for my $i (0 .. 1_000_000) {
        return "$prefix\{$i}" if slot_of_key("{$i}") == $slot;
    }
    die "no key for slot $slot";
}

# ------------------------------------------------------------- TLS material

my $t0 = Time::HiRes::time();
my $ca    = make_ca($t, 'ca');
my $other = make_ca($t, 'other');
my $good  = make_cert($t, 'server', ca => $ca);
my $expired  = make_cert($t, 'expired', ca => $ca, expired => 1);
my $foreign  = make_cert($t, 'foreign', ca => $other);
my $misnamed = make_cert($t, 'misnamed', ca => $ca,
                         cn => 'elsewhere.invalid', san => ['DNS:elsewhere.invalid']);
my %client = (client => 1, cn => 'fleet-client', san => []);
my $client         = make_cert($t, 'client', ca => $ca, %client);
my $client_expired = make_cert($t, 'client-expired', ca => $ca, %client, expired => 1);
my $client_foreign = make_cert($t, 'client-foreign', ca => $other, %client);
note 'TLS material made in ' . elapsed($t0);

ok(verify_cert($good, $ca)->{ok}, 'openssl verify: a good certificate')
    or diag verify_cert($good, $ca)->{out};
my $v = verify_cert($expired, $ca);
ok(!$v->{ok}, 'openssl verify: an expired certificate fails');
like($v->{out}, qr/certificate has expired/, 'openssl verify: ... as expired');
$v = verify_cert($foreign, $ca);
ok(!$v->{ok}, 'openssl verify: a certificate of another CA fails');
like($v->{out}, qr/unable to get local issuer certificate/,
     'openssl verify: ... for want of its issuer');

# -------------------------------------------------------- redis over TLS

sub tls_of {
    my ($c) = @_;
    return (cert => $c->{cert}, key => $c->{key}, ca => $ca->{cert});
}

# redis-cli's answer to PING, or its complaint
sub pong { my ($r) = @_; return $r->{out} eq 'PONG' ? 'PONG' : "$r->{out} $r->{err}"; }

$t0 = Time::HiRes::time();
my $srv = start_redis_tls($t, name => 'tls', tls_of($good), plain_port => 1,
                          password => 'tls-secret');
my $stale = start_redis_tls($t, name => 'expired', tls_of($expired));
my $wrong = start_redis_tls($t, name => 'misnamed', tls_of($misnamed));
my $mtls = start_redis_tls($t, name => 'mtls', tls_of($good), client_auth => 1);
push @topologies, $srv, $stale, $wrong, $mtls;
note 'four TLS servers up in ' . elapsed($t0);

is(pong($srv->cli('PING')), 'PONG', 'TLS: PING with the right CA');
is($srv->cli('SET', 'k', 'v')->{out}, 'OK', 'TLS: SET');
is($srv->cli('GET', 'k')->{out}, 'v', 'TLS: GET');
like($srv->cli({ password => undef }, 'GET', 'k')->{out}, qr/NOAUTH/,
     'TLS: the password is required');
is($srv->command('GET', 'k'), 'v', 'TLS: the plaintext port too');
isnt($srv->plain_port, $srv->port, 'TLS: the plaintext port is another one');
like(pong($srv->cli({ ca => $other->{cert} }, 'PING')),
     qr/certificate verify failed/, 'TLS: refused with another CA');
ok($srv->handshake(name => '127.0.0.1')->{ok}, 'TLS: the name 127.0.0.1 checks');
ok($srv->handshake(name => 'localhost')->{ok}, 'TLS: the name localhost checks');
is_deeply([ map { $srv->command('CONFIG', 'GET', $_)->[1] }
                qw(appendonly appendfsync maxmemory-policy tls-auth-clients) ],
          [qw(yes everysec noeviction no)],
          'TLS: AOF everysec, noeviction, no client certificates asked');
is($stale->plain_port, undef, 'TLS: no plaintext port unless asked');

like(pong($stale->cli('PING')), qr/certificate verify failed/,
     'expired: redis-cli refuses the server');
like($stale->handshake->{error} // '', qr/certificate has expired/,
     'expired: ... because it has expired');

is(pong($wrong->cli('PING')), 'PONG',
   'another name: redis-cli does not check names');
like($wrong->handshake(name => '127.0.0.1')->{error} // '', qr/IP address mismatch/,
     'another name: refused for 127.0.0.1 by a client that checks');
like($wrong->handshake(name => 'localhost')->{error} // '', qr/hostname mismatch/,
     'another name: refused for localhost by a client that checks');

isnt(pong($mtls->cli('PING')), 'PONG', 'mutual TLS: refused without a certificate');
is(pong($mtls->cli({ cert => $client->{cert}, key => $client->{key} }, 'PING')),
   'PONG', 'mutual TLS: served with a client certificate');
isnt(pong($mtls->cli({ cert => $client_expired->{cert},
                       key => $client_expired->{key} }, 'PING')),
     'PONG', 'mutual TLS: refused with an expired client certificate');
isnt(pong($mtls->cli({ cert => $client_foreign->{cert},
                       key => $client_foreign->{key} }, 'PING')),
     'PONG', 'mutual TLS: refused with a client certificate of another CA');

# ----------------------------------------------------------------- cluster

$t0 = Time::HiRes::time();
my $cl = start_cluster($t, primaries => 3, replicas => 1, tls => $good,
                       client_auth => 1, password => 'cluster-secret');
push @topologies, $cl;
note 'cluster 3+3 created and settled in ' . elapsed($t0);

my $nodes = $cl->nodes;
my @primaries = grep { $_->{role} eq 'primary' } @$nodes;
my %primary_ids = map { $_->{id} => 1 } @primaries;
is(scalar @$nodes, 6, 'cluster: six nodes');
is(scalar @primaries, 3, 'cluster: three primaries');
is(scalar(grep { $_->{role} eq 'replica' && $primary_ids{ $_->{primary_id} } }
           @$nodes), 3, 'cluster: three replicas, each of a primary');
my $covered = 0;
$covered += $_->[1] - $_->[0] + 1 for map { @{ $_->{slots} } } @primaries;
is($covered, 16384, 'cluster: the primaries cover the 16384 slots');
is_deeply([ sort $cl->seeds ], [ sort map { "127.0.0.1:$_->{port}" } @primaries ],
          'cluster: the seeds are the primaries');
is(scalar(grep { $cl->command($_->{port}, 'CLUSTER', 'INFO') =~ /^cluster_state:ok/m }
           @$nodes), 6, 'cluster: every node says cluster_state:ok');
is_deeply([ map { $cl->command($primaries[0]{port}, 'CONFIG', 'GET', $_)->[1] }
                qw(appendonly appendfsync maxmemory-policy tls-cluster) ],
          [qw(yes everysec noeviction yes)],
          'cluster: AOF everysec, noeviction, TLS between nodes');
isnt(pong(redis_cli(port => $primaries[0]{port}, password => 'cluster-secret',
                    command => ['PING'])), 'PONG',
     'cluster: no plaintext on the port clients are given');
isnt(pong(redis_cli(port => $primaries[0]{port}, password => 'cluster-secret',
                    tls => { ca => $ca->{cert} }, command => ['PING'])), 'PONG',
     'cluster: no client without a certificate');

# slots: the spec's check value, hash tags, and CLUSTER KEYSLOT
is(slot_of_key('123456789'), 0x31C3, 'slot_of_key: CRC16 of "123456789" is 0x31C3');
is(slot_of_key('{user1000}.following'), slot_of_key('user1000'),
   'slot_of_key: only the hash tag counts');
isnt(slot_of_key('foo{}{bar}'), slot_of_key('bar'),
     'slot_of_key: after an empty tag, the whole key is hashed');
my %value = map { ("key:$_" => "value-$_") } 1 .. 12;
$value{'{user1000}.following'} = 'tagged-1';
$value{'{user1000}.followers'} = 'tagged-2';
my @slot_keys = (keys %value, '123456789', 'foo', 'foo{}{bar}', 'foo{{bar}}zap',
                 'foo{bar}{zap}', '{}', '}{', 'x{y');
is_deeply({ map { $_ => $cl->command($primaries[0]{port}, 'CLUSTER', 'KEYSLOT', $_) }
                @slot_keys },
          { map { $_ => slot_of_key($_) } @slot_keys },
          'slot_of_key: equal to CLUSTER KEYSLOT, hash tags included');

# keys through redis-cli -c (TLS), each held by its slot's owner
is_deeply([ grep { $cl->cli('SET', $_, $value{$_})->{out} ne 'OK' } sort keys %value ],
          [], 'cluster: SET through redis-cli -c');
is_deeply({ map { $_ => $cl->cli('GET', $_)->{out} } keys %value }, \%value,
          'cluster: GET through redis-cli -c');
sub owned_values {
    return { map { $_ => $cl->command($cl->owner_of_slot(slot_of_key($_)), 'GET', $_) }
             keys %value };
}
is_deeply(owned_values(), \%value, 'cluster: each key is on the owner of its slot');
my %owners = map { $cl->owner_of_slot(slot_of_key($_)) => 1 } keys %value;
is(scalar keys %owners, 3, 'cluster: the keys are spread over the three primaries');

# reshard: redis-cli takes the source's lowest slots
my ($from, $to, $third) = @primaries;
my $lowest = $from->{slots}[0][0];
my $highest = $from->{slots}[-1][1];
$value{ key_in_slot($lowest, 'low') } = 'moves';
$value{ key_in_slot($highest, 'high') } = 'stays';
$cl->cli('SET', $_, $value{$_}) for grep { /^(?:low|high)\{/ } keys %value;
$t0 = Time::HiRes::time();
my $moved = $cl->reshard(from => $from->{port}, to => $to->{port}, slots => 50);
note 'reshard of 50 slots in ' . elapsed($t0);
is(scalar @$moved, 50, 'reshard: 50 slots moved');
ok((grep { $_ == $lowest } @$moved), 'reshard: the lowest slot of the source among them');
is(scalar(grep { ($cl->owner_of_slot($_) // 0) != $to->{port} } @$moved), 0,
   'reshard: the target owns them');
is($cl->command($to->{port}, 'GET', key_in_slot($lowest, 'low')), 'moves',
   'reshard: a key of a moved slot went along');
is($cl->command($from->{port}, 'GET', key_in_slot($highest, 'high')), 'stays',
   'reshard: a key of another slot stayed');
is_deeply(owned_values(), \%value, 'reshard: each key is on the owner of its slot');

# a primary killed: its replica takes over
my ($replica) = grep { ($_->{primary_id} // '') eq $third->{id} } @$nodes;
my ($promoted, $took) = $cl->kill_primary($third->{port});
note sprintf 'kill_primary: replica promoted, cluster ok in %.1f s', $took;
is($promoted, $replica->{port}, 'kill_primary: its replica took over');
ok(!alive($third->{pid}), 'kill_primary: the primary is gone');
is_deeply(owned_values(), \%value, 'kill_primary: no key lost');
is($cl->cli('GET', 'key:1')->{out}, 'value-1', 'kill_primary: redis-cli -c follows');

$took = $cl->restart($third->{port});
note sprintf 'restart: back as a replica in %.1f s', $took;
my ($back) = grep { $_->{id} eq $third->{id} } @{ $cl->nodes };
is($back->{role}, 'replica', 'restart: the old primary is back as a replica');
is($back->{primary_id}, $replica->{id}, 'restart: ... of the promoted one');

$took = $cl->failover($third->{port});
note sprintf 'failover: CLUSTER FAILOVER done in %.1f s', $took;
my %role = map { $_->{id} => $_->{role} } @{ $cl->nodes };
is($role{ $third->{id} }, 'primary', 'failover: the old primary is primary again');
is($role{ $replica->{id} }, 'replica', 'failover: ... and its replica a replica');
is_deeply(owned_values(), \%value, 'failover: no key lost');

# the plain kind: no TLS, no password, no replicas
$t0 = Time::HiRes::time();
my $plain = start_cluster($t, name => 'plain', primaries => 3, replicas => 0);
note 'plain cluster 3+0 up in ' . elapsed($t0);
my @seeds = $plain->seeds;
is(scalar @seeds, 3, 'plain cluster: three primaries');
is($plain->cli('SET', 'foo', 'bar')->{out}, 'OK',
   'plain cluster: SET through redis-cli -c');
is($plain->command($plain->owner_of_slot(12182), 'GET', 'foo'), 'bar',
   'plain cluster: "foo" is on the owner of slot 12182');
my @plain_pids = $plain->pids;
$plain->stop_cluster;
is(scalar(grep { alive($_) } @plain_pids), 0,
   'plain cluster: stop_cluster stops its 3 nodes');

# ---------------------------------------------------------------- sentinel

$t0 = Time::HiRes::time();
my $g = start_sentinel_group($t, replicas => 2, sentinels => 3,
    password => 'data-secret', sentinel_password => 'sentinel-secret');
push @topologies, $g;
note 'sentinel group up in ' . elapsed($t0);

my ($first) = grep { $_->{kind} eq 'data' } @{ $g->nodes };
my @sentinels = $g->sentinel_addrs;
is(scalar @sentinels, 3, 'sentinel: three sentinels');
is($g->master_addr, "127.0.0.1:$first->{port}",
   'sentinel: the first data node is the master');
my ($sport) = $sentinels[0] =~ /:(\d+)$/;
like(redis_cli(port => $sport, command => ['PING'])->{out}, qr/NOAUTH/,
     'sentinel: the sentinels want their password');
like(redis_cli(port => $first->{port}, command => ['PING'])->{out},
     qr/NOAUTH/, 'sentinel: the data nodes want theirs');
is($g->command($first->{port}, 'SET', 'kept', 'yes'), 'OK',
   'sentinel: SET on the master');
is($g->command($first->{port}, 'WAIT', 2, 5000), 2, 'sentinel: both replicas have it');

sub role_of {
    my ($addr) = @_;
    my ($port) = $addr =~ /:(\d+)$/;
    my $r = $g->command($port, 'ROLE');
    return ref $r eq 'ARRAY' ? $r->[0] : '?';
}

my ($m1, $took1) = $g->failover;
note sprintf 'SENTINEL FAILOVER followed in %.1f s', $took1;
isnt($m1, "127.0.0.1:$first->{port}", 'failover: another master');
is(role_of($m1), 'master', 'failover: it says role master');
sub sentinels_say {
    return [ map { my $r = $g->command((/:(\d+)$/)[0], 'SENTINEL',
                                       'GET-MASTER-ADDR-BY-NAME', 'mymaster');
                   ref $r eq 'ARRAY' ? join(':', @$r) : '?' } @sentinels ];
}
is_deeply(sentinels_say(), [ ($m1) x 3 ], 'failover: every sentinel names it');

my ($m2, $took2) = $g->kill_master;
note sprintf 'killed master replaced in %.1f s', $took2;
isnt($m2, $m1, 'kill_master: another master');
is(role_of($m2), 'master', 'kill_master: it says role master');
is_deeply(sentinels_say(), [ ($m2) x 3 ], 'kill_master: every sentinel names it');
my ($killed) = grep { "127.0.0.1:$_->{port}" eq $m1 } @{ $g->nodes };
ok(!$killed->{alive}, 'kill_master: the old master is not running');
is($g->command(($m2 =~ /:(\d+)$/)[0], 'GET', 'kept'), 'yes',
   'kill_master: the data is kept');

# ---------------------------------------------------------------- cleanup

# a test process killed: its watchdog stops its Redis and removes its dir
# (which INFLUENCERS_LEAVE would keep)
{
    delete local $ENV{INFLUENCERS_LEAVE};
    my $code = <<'EOF';
use InfTest ();
use RedisTopo qw(start_redis_tls);
my ($cert, $key, $ca) = @ARGV;
my $t = InfTest->new;
my $s = start_redis_tls($t, cert => $cert, key => $key, ca => $ca);
$| = 1;
print $s->pid, ' ', $t->dir, "\n";
sleep 60;
EOF
    my $child = open(my $from_child, '-|', $^X, "-I$FindBin::Bin/lib", '-e',
                     $code, $good->{cert}, $good->{key}, $ca->{cert})
        or die "cannot run a child test: $!";
    my ($redis_pid, $child_dir) = split ' ', (<$from_child> // '0 -');
    ok($redis_pid && alive($redis_pid), 'watchdog: a child test runs a Redis');
    kill 'KILL', $child;
    close $from_child;
    my $end = Time::HiRes::time() + 20;
    Time::HiRes::sleep(0.1)
        while Time::HiRes::time() < $end && (alive($redis_pid) || -d $child_dir);
    ok(!alive($redis_pid), 'watchdog: its Redis stopped when it was killed');
    ok(!-d $child_dir, 'watchdog: its dir removed');
}

my @pids = map { $_->pids } @topologies;
$_->stop for @topologies;
is(scalar(grep { alive($_) } @pids), 0, 'stop: no process left of ' . scalar(@pids));

done_testing;
