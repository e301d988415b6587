#!/usr/bin/perl

# ISSUE 17: fleet mode on a Redis Cluster.  Three primaries and three
# replicas (t/lib/RedisTopo.pm, cluster-node-timeout 1 s, no password), and
# two gateway nodes (each a master and two workers) with
#     influencers_redis zone=jobs cluster=P1,P2 timeout=1s;
# the seeds are only two of the three primaries: the third is found in the
# map (CLUSTER SLOTS).  Lease 1 s, proxy_read_timeout 2 s.
#
#   (1) keys over all the slots: 60 keys accepted on node 1 replay on node
#       2 with their jobId; every primary holds some of the module's keys,
#       the one not among the seeds too (DBSIZE, SCAN on each primary);
#       every key is named influencers:<16 hex>:<64 hex> and lives on the
#       owner of its slot (CLUSTER KEYSLOT equal to CRC16, owner_of_slot);
#       the 64 hex are the SHA-256 of the org and the Idempotency-Key,
#       which tells the tests below the slot of each of their keys;
#   (1b) ASK: eight slots of the third primary held half-migrated
#       (MIGRATING there, IMPORTING on a seed): two keys accepted before
#       stay on the source and replay from it, six new keys are claimed
#       and finished on the target through ASK (the primaries count ASK
#       replies); once the old keys are MIGRATEd and the slots given to the
#       target, new keys of those slots are accepted on both nodes (their
#       maps name the old owner: MOVED, followed), and a fresh node replays
#       all twelve from the new owner;
#   (2) a reshard under load: 1000 slots moved from the primary that is
#       not a seed to a seed (redis-cli --cluster reshard) while forked
#       clients (t/lib/Drill.pm: new keys, each retried on both nodes in
#       turn until a 202, then sent once more to the other node) send
#       keyed requests to both nodes;
#   (4) CLUSTER FAILOVER (coordinated) of that seed's replica under load,
#       on a fresh pair of gateway nodes with wait=1: zero second jobs;
#       every key the test accepted before the failover (and the drill's
#       keys accepted during it) replays its jobId after it;
#   (3) the other seed SIGKILLed under load, on the first pair (wait=0):
#       its replica is promoted after the node timeout.  5xx are allowed
#       meanwhile; wrong answers (two job ids for a key, two jobs at the
#       backend for a key) are not.  Recovery: the first new key of the
#       killed primary's slots accepted after their first failure;
#   (5) nginx -t refuses cluster= with an address, with sentinel=, with
#       db=1, bad cluster addresses (no port, a bad port, port 0, empty, an
#       empty item, 17 seeds) and cluster=unix:/x, with an [emerg] that
#       says what is wrong and names the file and line; accepts cluster=
#       (with prefix=, password=, wait=, on_error=) without connecting to
#       the cluster;
#   (6) a cluster over TLS (3 primaries, no replicas): two gateway nodes
#       with ssl=on ssl_trusted_certificate=CA accept keys that land on
#       every primary, and each node replays the other's.
#
# For each drill, per key: the distinct job ids partners saw (must be 1),
# the jobs the backend received (it dedupes on the forward's
# Idempotency-Key: at most 1, exactly 1 for every key that got a 202, and
# the one the partners saw), the 5xx answers, the recovery time; every key
# is accepted in the end (the keys still open when the load ends are
# retried afterwards); every key of the drill accepted before the end of
# the event, every earlier key of the slots it touched (of any slot for
# the failover) and the keys of (1) replay their jobs after it, on a fresh
# gateway node (the drill's nodes would answer the keys they saw from
# their zones: a fresh one asks Redis).  The load goes on for 2 s after
# the event ends.  Printed as "RESULT cluster reshard|failover|kill: ..." lines,
# with the MOVED and ASK replies the primaries gave (INFO errorstats).
#
# DRILL_CLIENTS (6) and DRILL_TAIL (2 s) make other runs by hand.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use Digest::SHA ();
use InfTest qw(:all);
use RedisTopo qw(start_cluster make_ca make_cert slot_of_key);
use FaultLoad ();
use Drill ();

# Drill.pm's clients, whose load ends $tail s after the event ends (the
# test writes the time into a file then: stop()), or at its hard end: the
# clients compare the time with $self->{end} before each request, which
# here is an object that reads that file when it is taken as a number
{
    package StopAt;
    use overload '0+' => sub {
        my ($s) = @_;
        if (open my $fh, '<', $s->{file}) {
            my $t = <$fh>;
            if (defined $t && $t =~ /^(\d+(?:\.\d+)?)$/) {
                my $end = $1 + $s->{tail};
                return $end < $s->{hard} ? $end : $s->{hard};
            }
        }
        return $s->{hard};
    }, fallback => 1;
    sub new {
        my ($class, %o) = @_;
        return bless { %o }, $class;
    }

    package ClusterDrill;
    use parent -norequire, 'Drill';
    sub start {
        my ($class, $t, %o) = @_;
        my $self = bless {
            t => $t, ports => $o{ports}, name => $o{name},
            clients => $o{clients}, pause => 0.05, timeout => $o{timeout},
            pids => {},
        }, $class;
        $self->{stop_file} = $t->path("drill-$o{name}.stop");
        unlink $self->{stop_file};
        $self->{start} = Time::HiRes::time() + 0.2;
        $self->{end} = StopAt->new(hard => $self->{start} + $o{seconds},
                                   file => $self->{stop_file}, tail => $o{tail});
        $self->{pids} = $t->fork_clients("drill-$self->{name}", $self->{clients},
                                         sub { $self->_client($_[0]) });
        return $self;
    }
    sub stop {
        my ($self) = @_;
        open my $fh, '>', "$self->{stop_file}.tmp" or die "$self->{stop_file}: $!";
        printf {$fh} "%.4f\n", Time::HiRes::time();
        close $fh;
        rename "$self->{stop_file}.tmp", $self->{stop_file} or die "rename: $!";
    }
}

my $missing = RedisTopo::tools_missing();
plan skip_all => $missing if $missing;
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $T0 = Time::HiRes::time();
my $LEASE = 1;
my $CLIENTS = $ENV{DRILL_CLIENTS} // 6;
my $ZONE = "zone=jobs:4m lease=${LEASE}s org_share=100%";
my $ORG = 'org_acme';    # K_WRITE's org: every key of this test is its

# the first $n of a list, for diag()
sub head { my ($n, @l) = @_; return @l > $n ? @l[0 .. $n - 1] : @l; }

sub elapsed { return sprintf '%.1f s', Time::HiRes::time() - $_[0]; }

my $seq = 0;
sub fresh { return sprintf('cl-%s-%d-%d', $_[0], $$, ++$seq); }
sub body { return qq({"prompt":"$_[0]"}); }

my $h = InfTest->new;
my $cl = start_cluster($h, primaries => 3, replicas => 1,
                       node_timeout_ms => 1000, timeout => 30);
my @P = grep { $_->{role} eq 'primary' } @{ $cl->nodes };
my %REPLICA_OF = map { ($_->{primary_id} // '') => $_ }
                 grep { $_->{role} eq 'replica' } @{ $cl->nodes };
# A and B are the seeds; C is found in the map
my ($A, $B, $C) = @P;
my $SEEDS = "127.0.0.1:$A->{port},127.0.0.1:$B->{port}";
note 'cluster of 3 primaries and 3 replicas up in ' . elapsed($T0)
     . ": primaries $A->{port} $B->{port} $C->{port}, seeds $SEEDS";

my ($n1, $n2) = InfTest->fleet(
    log_level    => 'warn',
    zone         => $ZONE,
    read_timeout => '2s',
    workers      => 2,
    main         => 'worker_rlimit_nofile 2048;',
    address      => "cluster=$SEEDS",
    redis        => 'timeout=1s',
);

# another gateway node on the same cluster and backend
sub node {
    my ($args) = @_;
    my $n = $n1->peer;
    $n->write_directory;
    $n->conf($n->default_conf(server => STATS_LOCATION, zone => $ZONE,
        read_timeout => '2s', workers => 2,
        main => 'worker_rlimit_nofile 2048;',
        redis => "zone=jobs cluster=$SEEDS $args"));
    $n->run;
    return $n;
}

# ------------------------------------------------------------ Redis side

# every key matching $pattern on the node at $port (SCAN)
sub scan_keys {
    my ($port, $pattern, $c) = @_;
    $c //= $cl;
    my ($cursor, $guard, %k) = (0, 0);
    do {
        my $r = $c->command($port, 'SCAN', $cursor, 'MATCH', $pattern,
                            'COUNT', 1000);
        return undef if ref $r ne 'ARRAY';
        $cursor = $r->[0];
        $k{$_} = 1 for @{ $r->[1] };
    } while ($cursor ne '0' && ++$guard < 10000);
    return [ sort keys %k ];
}

sub live_primaries {
    return grep { $_->{alive} && $_->{role} eq 'primary' } @{ $cl->nodes };
}

# MOVED and ASK replies the live primaries gave so far (INFO errorstats)
sub redirects {
    my %n = (MOVED => 0, ASK => 0);
    for my $p (@{ $cl->nodes }) {
        next unless $p->{alive};
        my $i = $cl->command($p->{port}, 'INFO', 'errorstats');
        next if ref $i;
        $n{$1} += $2 while $i =~ /^errorstat_(MOVED|ASK):count=(\d+)/mg;
    }
    return \%n;
}

# the org hash of the module's keys, learnt in (1)
my $ORG_HASH;

# the Redis key of an Idempotency-Key of this test's org
sub redis_key {
    my ($key) = @_;
    return "influencers:$ORG_HASH:"
           . Digest::SHA::sha256_hex(chr(length $ORG) . $ORG . $key);
}

sub key_slot { return defined $ORG_HASH ? slot_of_key(redis_key($_[0])) : undef; }

# the slots a primary owns now, as a hash
sub slots_of {
    my ($port) = @_;
    my ($n) = grep { $_->{port} == $port } @{ $cl->nodes };
    return { map { $_ => 1 } map { $_->[0] .. $_->[1] } @{ $n->{slots} } };
}

# ------------------------------------------------------------ (1) keys over the slots

my %ACCEPTED;    # key => jobId, every key accepted so far
my %SPREAD;      # the keys of (1), replayed after every event

{
    my $t0 = Time::HiRes::time();
    my @keys = map { fresh('spread') } 1 .. 60;
    my (%first, @bad1);
    for my $key (@keys) {
        my $r = $n1->idem($key, body => body($key));
        my $job = $r->status == 202 ? ($r->json || {})->{jobId} : undef;
        if ($job && !defined $r->header('idempotent-replayed')) {
            $first{$key} = $job;
        } else {
            push @bad1, "$key: " . $r->summary;
        }
    }
    is(scalar keys %first, 60, 'spread: 60 new keys accepted on node 1 (202, new jobs)')
        or diag(join "\n", head(5, @bad1), grep { /\[(?:error|warn)\]/ }
                                             split /\n/, $n1->error_log);
    my @bad2;
    for my $key (@keys) {
        my $r = $n2->idem($key, body => body($key));
        my $job = $r->status == 202 ? ($r->json || {})->{jobId} // '' : '';
        push @bad2, "$key: " . $r->summary
            unless $job eq ($first{$key} // '-')
                   && ($r->header('idempotent-replayed') // '') eq 'true';
    }
    is(scalar @bad2, 0, 'spread: node 2 replays each of them with its jobId')
        or diag(join "\n", head(5, @bad2));
    %ACCEPTED = %SPREAD = %first;

    # on the primaries
    my (%held, %where, @misplaced, @badname, %orgs);
    for my $p (@P) {
        my $dbsize = $cl->command($p->{port}, 'DBSIZE');
        my $keys = scan_keys($p->{port}, 'influencers:*') || [];
        $held{ $p->{port} } = scalar @$keys;
        note("spread: primary $p->{port} DBSIZE $dbsize, "
             . scalar(@$keys) . ' keys of the module');
        for my $k (@$keys) {
            $where{$k} = $p->{port};
            unless ($k =~ /^influencers:([0-9a-f]{16}):[0-9a-f]{64}$/) {
                push @badname, $k;
                next;
            }
            $orgs{$1}++;
            my $ks = $cl->command($p->{port}, 'CLUSTER', 'KEYSLOT', $k);
            my $slot = slot_of_key($k);
            my $owner = $cl->owner_of_slot($slot) // '?';
            push @misplaced, "$k: slot $slot (KEYSLOT $ks), on $p->{port}, owner $owner"
                if $ks != $slot || $owner ne $p->{port};
        }
    }
    is(scalar(grep { $held{ $_->{port} } > 0 } @P), 3,
       'spread: every primary holds some of the module\'s keys ('
       . join(', ', map { "$_->{port}: $held{ $_->{port} }" } @P) . ')');
    cmp_ok($held{ $C->{port} }, '>', 0,
           "spread: the primary not among the seeds ($C->{port}) too: found in the map");
    is(scalar keys %where, 60, 'spread: 60 keys of the module in all');
    is(scalar @badname, 0, 'spread: each named influencers:<16 hex>:<64 hex>')
        or diag(join "\n", head(5, @badname));
    is(scalar @misplaced, 0, 'spread: each on the owner of its slot (CLUSTER KEYSLOT = CRC16)')
        or diag(join "\n", head(5, @misplaced));
    is(scalar keys %orgs, 1, 'spread: one org hash for the one org');
    ($ORG_HASH) = keys %orgs;
    my @unknown = grep { !$where{ redis_key($_) } } @keys;
    is(scalar @unknown, 0,
       'spread: each key is influencers:<org hash>:<SHA-256 of the org and the key> '
       . '(the drills tell their keys\' slots by it)')
        or do { diag('not found: ' . join(' ', head(5, @unknown))); undef $ORG_HASH; };
    note('spread: done in ' . elapsed($t0));
}

# ------------------------------------------------------------ the drills

# a drill: Drill.pm's clients on $o{nodes}, $event->() $o{at} s into it,
# the load going on for $TAIL s after the event (at most 30 s in all); then
# the keys left open are retried (both nodes in turn) until accepted or 4 s
# have passed
my $TAIL = $ENV{DRILL_TAIL} // 2;

sub drill {
    my ($name, $event, %o) = @_;
    my @nodes = @{ $o{nodes} };
    my $d = ClusterDrill->start($nodes[0], ports => [ map { $_->port } @nodes ],
                                clients => $CLIENTS, seconds => 30, tail => $TAIL,
                                name => $name, timeout => 3);
    sleep_until($d->{start} + $o{at});
    my $ev0 = Time::HiRes::time();
    my @ev = eval { $event->() };
    my $err = $@;
    my $ev1 = Time::HiRes::time();
    $d->stop;
    my $res = $d->finish;

    my %later;
    my $end = Time::HiRes::time() + 4;
    for my $key (@{ $res->{open} }) {
        for my $i (0 .. 39) {
            my $node = $nodes[$i % @nodes];
            my $t0 = Time::HiRes::time();
            my $r = $node->idem($key, body => body($key));
            my $j = $r->status == 202 ? ($r->json || {})->{jobId} // '' : '';
            push @{ $later{$key} }, { key => $key, t => $t0, status => $r->status,
                                      err => $r->status ? '-' : 'broken', job => $j };
            last if $r->status == 202 || Time::HiRes::time() > $end;
            Time::HiRes::sleep(0.1);
        }
    }
    for my $key (keys %later) {
        push @{ $res->{keys}{$key} }, @{ $later{$key} };
    }
    # what the keys left open got, for the record
    for my $key (head(3, sort @{ $res->{open} })) {
        note("$name: open at the end of the load: $key: " . join(', ', map {
            sprintf('%+.2f s node %d %s%s', $_->{t} - $ev0, ($_->{node} // -1) + 1,
                    $_->{status}, $_->{err} eq '-' ? '' : " $_->{err}")
        } @{ $res->{keys}{$key} }));
    }
    return { name => $name, d => $d, res => $res, ev0 => $ev0, ev1 => $ev1,
             event => \@ev, error => $err, nodes => \@nodes };
}

# the counts of a drill.  $o{affected}: the slots the event was about;
# $o{at}: when it really began (the kill, the CLUSTER FAILOVER), default
# the event's start.  For the keys of those slots, in seconds from that
# moment: their first 5xx or broken answer, the first of them accepted
# among those whose first request came after that failure (or after the
# moment, when none failed; the time its 202's request was sent), and
# their last failure.
sub counts {
    my ($run, %o) = @_;
    my $res = $run->{res};
    my $at = $o{at} // $run->{ev0};
    my $jobs = FaultLoad::jobs_by_marker($n1);
    my %c = (keys => 0, accepted => 0, answers202 => 0, ids_max => 0, multi_ids => 0,
             backend_max => 0, backend_multi => 0, no_backend => 0, foreign => 0,
             e5xx => 0, e5xx_event => 0, e409 => 0, broken => 0, requests => 0, after => 0,
             affected => 0, problems => [], job => {}, job_t => {});
    my $last_bad = 0;
    my ($first_ok, $first_bad_aff, $last_bad_aff, %aff_keys);
    for my $key (keys %{ $res->{keys} }) {
        my @rs = @{ $res->{keys}{$key} };
        $c{keys}++;
        my $slot = key_slot($key);
        my $aff = $o{affected} && defined $slot ? $o{affected}{$slot} : 0;
        $c{affected}++ if $aff;
        my %ids;
        for my $q (@rs) {
            $c{requests}++;
            $c{after}++ if $q->{t} > $run->{ev1};
            my $bad = $q->{status} >= 500 || $q->{err} ne '-';
            $c{e5xx}++ if $q->{status} >= 500;
            $c{e409}++ if $q->{status} == 409;
            $c{e5xx_event}++ if $q->{status} >= 500 && $q->{t} >= $run->{ev0} - 1;
            $c{broken}++ if $q->{err} ne '-';
            $last_bad = $q->{t} if $bad && $q->{t} > $last_bad;
            if ($aff && $bad && $q->{t} >= $at) {
                $last_bad_aff = $q->{t}
                    if !defined $last_bad_aff || $q->{t} > $last_bad_aff;
                $first_bad_aff = $q->{t}
                    if !defined $first_bad_aff || $q->{t} < $first_bad_aff;
            }
            next unless $q->{status} == 202;
            $c{answers202}++;
            $ids{ $q->{job} }++;
            $c{job_t}{$key} //= $q->{t};
        }
        $aff_keys{$key} = $rs[0]{t} if $aff && @rs && defined $c{job_t}{$key};
        my $n = keys %ids;
        $c{accepted}++ if $n;
        $c{ids_max} = $n if $n > $c{ids_max};
        if ($n > 1) {
            $c{multi_ids}++;
            push @{ $c{problems} }, "$key: partners saw " . join(', ', sort keys %ids);
        }
        my $b = keys %{ $jobs->{$key} || {} };
        $c{backend_max} = $b if $b > $c{backend_max};
        if ($b > 1) {
            $c{backend_multi}++;
            push @{ $c{problems} }, "$key: the backend got $b jobs: "
                                    . join(', ', sort keys %{ $jobs->{$key} });
        }
        if ($n && !$b) {
            $c{no_backend}++;
            push @{ $c{problems} }, "$key: a 202 without a job at the backend";
        }
        if ($n == 1 && $b == 1 && !$jobs->{$key}{ (keys %ids)[0] }) {
            $c{foreign}++;
            push @{ $c{problems} }, "$key: partners saw another job than the backend got";
        }
        $c{job}{$key} = (keys %ids)[0] if $n == 1;
    }
    my $from = $first_bad_aff // $at;
    for my $key (keys %aff_keys) {
        next if $aff_keys{$key} < $from;
        $first_ok = $c{job_t}{$key}
            if !defined $first_ok || $c{job_t}{$key} < $first_ok;
    }
    $c{recovery} = $last_bad > $run->{ev1} ? $last_bad - $run->{ev1} : 0;
    $c{first_bad_affected} = defined $first_bad_aff ? $first_bad_aff - $at : undef;
    $c{first_202} = defined $first_ok ? $first_ok - $at : undef;
    $c{last_bad_affected} = defined $last_bad_aff ? $last_bad_aff - $at : undef;
    return \%c;
}

# every key of %$job (key => jobId) sent again, half to each node (forked
# clients, each key until a 202 or 3 s): {ok, bad => [...]}
sub replays {
    my ($name, $job, @nodes) = @_;
    my @keys = sort keys %$job;
    my $k = 4;
    my $d = bless { t => $n1, timeout => 3 }, 'Drill';
    my $pids = $n1->fork_clients("replay-$name", $k, sub {
        my ($c) = @_;
        my $out = '';
        for my $i (grep { $_ % $k == $c - 1 } 0 .. $#keys) {
            my $key = $keys[$i];
            my $port = $nodes[$i % @nodes]->port;
            my $end = Time::HiRes::time() + 3;
            my ($status, $err, $got);
            do {
                ($status, $err, $got) = $d->_request($port, $key);
            } while ($status != 202 && Time::HiRes::time() < $end
                     && Time::HiRes::sleep(0.1));
            $out .= "$key $status $err " . ($got || '-') . "\n";
        }
        return $out;
    });
    InfTest::reap($pids, Time::HiRes::time() + 30, 0.05);
    my ($ok, @bad) = (0);
    my %seen;
    for my $c (1 .. $k) {
        for my $l (split /\n/, $n1->read_file("replay-$name-$c.txt") // "ERROR none\n") {
            if ($l =~ /^ERROR/) {
                push @bad, "replay client $c: $l";
                next;
            }
            my ($key, $status, $err, $got) = split / /, $l;
            $seen{$key} = 1;
            if ($status == 202 && $got eq $job->{$key}) {
                $ok++;
            } else {
                push @bad, "$key: $status $err $got, accepted as $job->{$key}";
            }
        }
    }
    push @bad, map { "$_: not replayed" } grep { !$seen{$_} } @keys;
    return { ok => $ok, bad => \@bad };
}

sub check_drill {
    my ($run, $c) = @_;
    my $name = $run->{name};
    ok(!$run->{error}, "$name: the event happened") or diag($run->{error});
    is(scalar @{ $run->{res}{errors} }, 0, "$name: every client ended by itself")
        or diag(join "\n", @{ $run->{res}{errors} });
    cmp_ok($c->{keys}, '>=', 20, "$name: the drill made keys ($c->{keys})");
    cmp_ok($c->{after}, '>=', 10,
           "$name: the load went on after the event ($c->{after} requests)");
    is($c->{accepted}, $c->{keys}, "$name: every key accepted in the end");
    is($c->{ids_max}, 1, "$name: partners saw one job id per key");
    is($c->{backend_max}, 1, "$name: the backend got at most one job per key");
    is($c->{no_backend}, 0, "$name: every key with a 202 has its job at the backend");
    is($c->{foreign}, 0, "$name: the job partners saw is the one the backend got");
    is(scalar @{ $c->{problems} }, 0, "$name: zero second jobs")
        or diag(join "\n", head(10, @{ $c->{problems} }));
    my $jobs = FaultLoad::jobs_by_marker($n1);
    my @stray = grep { !$c->{job}{$_} && $jobs->{$_} } keys %{ $run->{res}{keys} };
    is(scalar @stray, 0, "$name: no job at the backend for a key never accepted")
        or diag(join ' ', head(10, @stray));
}

sub fmt { return defined $_[0] ? sprintf('%.2f', $_[0]) : 'never'; }
sub since { return defined $_[0] ? sprintf('+%.2f s', $_[0]) : 'none'; }

# keys accepted before the end of the event, and the earlier ones: replayed
# on both nodes after it
sub check_replays {
    my ($run, $c, $earlier, $what) = @_;
    my $name = $run->{name};
    my %before = %$earlier;
    my $mine = 0;
    for my $key (keys %{ $c->{job} }) {
        next unless $c->{job_t}{$key} <= $run->{ev1};
        $before{$key} = $c->{job}{$key};
        $mine++;
    }
    # the gateway nodes of the drill answer the keys they saw from their
    # zones: Redis is asked by a fresh node
    my $t0 = Time::HiRes::time();
    my $w = node('timeout=1s');
    my $r = replays($name, \%before, $w);
    note("$name: " . scalar(keys %before) . ' keys replayed in ' . elapsed($t0));
    is($r->{ok}, scalar keys %before,
       "$name: every key of the drill accepted before the end of the event ($mine), "
       . "and $what (" . (keys(%before) - $mine) . '), replays its job after it, on a '
       . 'fresh gateway node (Redis answers)')
        or diag(join "\n", head(10, @{ $r->{bad} }));
    $w->check_log_clean;
    return scalar keys %before;
}

# the keys of %ACCEPTED whose slots are in %$slots, and the spread keys
sub earlier_keys {
    my ($slots) = @_;
    my %k = %SPREAD;
    for my $key (keys %ACCEPTED) {
        my $s = key_slot($key);
        $k{$key} = $ACCEPTED{$key} if defined $s && $slots->{$s};
    }
    return \%k;
}

sub result {
    my ($what, $run, $c, $replayed, $m0, $m1) = @_;
    return sprintf('%d keys (%d of %s), %d requests, %d x 202, job ids per key max %d, '
                   . 'backend jobs per key max %d, %d second jobs, %d x 5xx (%d from 1 s '
                   . 'before the event on), %d x 409, %d broken, %d open at the end of the load; '
                   . 'recovery %s s after the event (last 5xx or broken answer); keys of '
                   . '%s, from the moment it began: first failure %s, first new key '
                   . 'accepted after it %s, last failure %s; '
                   . '%d keys replayed after it; the primaries answered %d MOVED and %d ASK',
                   $c->{keys}, $c->{affected}, $what, $c->{requests}, $c->{answers202},
                   $c->{ids_max}, $c->{backend_max}, $c->{multi_ids} + $c->{backend_multi},
                   $c->{e5xx}, $c->{e5xx_event}, $c->{e409}, $c->{broken},
                   scalar @{ $run->{res}{open} }, fmt($c->{recovery}), $what,
                   since($c->{first_bad_affected}), since($c->{first_202}),
                   since($c->{last_bad_affected}), $replayed,
                   $m1->{MOVED} - $m0->{MOVED}, $m1->{ASK} - $m0->{ASK});
}

# ------------------------------------------------------------ (1b) slots half-migrated: ASK

# eight keys of slots of C: two accepted before, then their slots set
# MIGRATING on C and IMPORTING on A (as redis-cli does, slot by slot; here
# all eight at once, and held): the two old keys are still served by C, the
# six new ones are claimed and finished on A through ASK; once the keys
# left on C are MIGRATEd and the slots given to A, new keys of those slots
# go to A after a MOVED, and a fresh node replays every key from A
SKIP: {
    skip 'the keys\' slots are unknown', 1 unless defined $ORG_HASH;
    my $t0 = Time::HiRes::time();
    my ($src, $dst) = ($C, $A);
    my $owned = slots_of($src->{port});
    my (@keys, %slot, %taken);
    while (@keys < 8) {
        my $k = fresh('ask');
        my $s = key_slot($k);
        next if !$owned->{$s} || $taken{$s}++;
        push @keys, $k;
        $slot{$k} = $s;
    }
    my @old = @keys[0, 1];
    my @new = @keys[2 .. 7];
    my (%job, @bad);
    for my $k (@old) {
        my $r = $n1->idem($k, body => body($k));
        if ($r->status == 202) {
            $job{$k} = ($r->json || {})->{jobId};
        } else {
            push @bad, "$k: " . $r->summary;
        }
    }
    is(scalar @bad, 0, 'ASK: two keys of slots of the primary not among the seeds accepted');
    my @set;
    for my $k (@keys) {
        push @set, $cl->command($dst->{port}, 'CLUSTER', 'SETSLOT', $slot{$k},
                                'IMPORTING', $src->{id});
        push @set, $cl->command($src->{port}, 'CLUSTER', 'SETSLOT', $slot{$k},
                                'MIGRATING', $dst->{id});
    }
    is(scalar(grep { ($_ // '') ne 'OK' } @set), 0,
       "ASK: their 8 slots MIGRATING on $src->{port}, IMPORTING on $dst->{port}");
    my $a0 = redirects();
    @bad = ();
    for my $i (0 .. $#new) {
        my $k = $new[$i];
        my $r = ($i % 2 ? $n2 : $n1)->idem($k, body => body($k));
        if ($r->status == 202 && !defined $r->header('idempotent-replayed')) {
            $job{$k} = ($r->json || {})->{jobId};
        } else {
            push @bad, "$k: " . $r->summary;
        }
    }
    is(scalar @bad, 0, 'ASK: six new keys of those slots accepted, on both nodes')
        or diag(join "\n", @bad, grep { /\[(?:error|warn)\]/ } split /\n/, $n1->error_log);
    # a node replays from Redis what its zone has not seen: each key on the
    # node that did not accept it, or on a fresh node
    my $replayed = sub {
        my ($when, $keys, @nodes) = @_;
        my @b;
        for my $i (0 .. $#$keys) {
            my $k = $keys->[$i];
            my $r = $nodes[$i % @nodes]->idem($k, body => body($k));
            push @b, "$k: " . $r->summary
                unless $r->status == 202 && (($r->json || {})->{jobId} // '') eq ($job{$k} // '-')
                       && ($r->header('idempotent-replayed') // '') eq 'true';
        }
        is(scalar @b, 0, "ASK: $when") or diag(join "\n", head(5, @b));
    };
    $replayed->('slots half-migrated, node 2 replays an old key, and each node '
                . 'the new keys the other accepted', [ $old[0], @new ], $n2, $n1);
    my $a1 = redirects();
    my $on = sub {
        my (@ks) = @_;
        my %on;
        for my $k (@ks) {
            for my $p ($src, $dst) {
                my $in = $cl->command($p->{port}, 'CLUSTER', 'GETKEYSINSLOT', $slot{$k}, 10);
                $on{$k} = $p->{port}
                    if ref $in eq 'ARRAY' && grep { $_ eq redis_key($k) } @$in;
            }
        }
        return join ' ', map { $on{$_} // '-' } @ks;
    };
    is($on->(@old), "$src->{port} $src->{port}", 'ASK: the old keys still on the migrating node');
    is($on->(@new), join(' ', ($dst->{port}) x 6), 'ASK: the new keys on the importing node');
    cmp_ok($a1->{ASK} - $a0->{ASK}, '>=', 6,
           'ASK: the primaries answered ASK (' . ($a1->{ASK} - $a0->{ASK}) . ' times)');

    # the migration finished: every key left in those slots MIGRATEd (the
    # old ones, and any earlier key of the test there), the slots given to A
    my (@fin, %moving);
    for my $k (@keys) {
        my $in = $cl->command($src->{port}, 'CLUSTER', 'GETKEYSINSLOT', $slot{$k}, 1000);
        next unless ref $in eq 'ARRAY' && @$in;
        $moving{$_} = 1 for @$in;
        # one slot's keys at a time (CROSSSLOT otherwise)
        push @fin, $cl->command($src->{port}, 'MIGRATE', '127.0.0.1', $dst->{port}, '',
                                0, 5000, 'KEYS', @$in);
    }
    ok($moving{ redis_key($old[0]) } && $moving{ redis_key($old[1]) },
       'ASK: the old keys among the ' . scalar(keys %moving) . ' left on the migrating node');
    for my $k (@keys) {
        for my $p ($dst, $src, $B) {
            push @fin, $cl->command($p->{port}, 'CLUSTER', 'SETSLOT', $slot{$k},
                                    'NODE', $dst->{id});
        }
    }
    is(scalar(grep { ($_ // '') ne 'OK' } @fin), 0,
       'ASK: those keys MIGRATEd, the slots given to the importing node')
        or diag(join ', ', map { ref $_ ? $_->{error} : $_ // 'nil' } @fin);
    $cl->wait_stable(timeout => 20);

    # new keys of those slots on the gateway nodes, whose maps still name
    # the old owner: MOVED, followed
    my %in = map { $slot{$_} => 1 } @keys;
    my @more;
    while (@more < 4) {
        my $k = fresh('moved');
        my $s = key_slot($k);
        next unless $in{$s};
        push @more, $k;
        $slot{$k} = $s;
    }
    @bad = ();
    for my $i (0 .. $#more) {
        my $r = ($i % 2 ? $n2 : $n1)->idem($more[$i], body => body($more[$i]));
        if ($r->status == 202 && !defined $r->header('idempotent-replayed')) {
            $job{ $more[$i] } = ($r->json || {})->{jobId};
        } else {
            push @bad, "$more[$i]: " . $r->summary;
        }
    }
    my $a2 = redirects();
    is(scalar @bad, 0, 'ASK: the slots moved, two new keys of them accepted on each node')
        or diag(join "\n", @bad);
    cmp_ok($a2->{MOVED} - $a1->{MOVED}, '>=', 1,
           'ASK: ... after a MOVED (' . ($a2->{MOVED} - $a1->{MOVED}) . ') from the old owner');
    is($on->(@keys, @more), join(' ', ($dst->{port}) x 12),
       'ASK: the twelve keys on the new owner');
    my $w = node('timeout=1s');
    $replayed->('a fresh gateway node replays the twelve keys from Redis', [ @keys, @more ], $w);
    $w->check_log_clean;
    note(sprintf 'ASK: %d ASK and %d MOVED answers while half-migrated, %d MOVED after; in %s',
         $a1->{ASK} - $a0->{ASK}, $a1->{MOVED} - $a0->{MOVED},
         $a2->{MOVED} - $a1->{MOVED}, elapsed($t0));
    $ACCEPTED{$_} = $job{$_} for grep { $job{$_} } @keys, @more;
}

# ------------------------------------------------------------ (2) reshard under load

{
    my $m0 = redirects();
    my $moving = slots_of($C->{port});
    my $run = drill('reshard', sub {
        return @{ $cl->reshard(from => $C->{port}, to => $A->{port}, slots => 1000,
                               timeout => 40) };
    }, nodes => [$n1, $n2], at => 1.5);
    my %moved = map { $_ => 1 } @{ $run->{event} };
    my $m1 = redirects();
    is(scalar keys %moved, 1000, 'reshard: 1000 slots moved from the primary not '
       . "among the seeds ($C->{port}) to a seed ($A->{port})");
    is(scalar(grep { !$moving->{$_} } keys %moved), 0, '... all of them its');
    my $c = counts($run, affected => \%moved);
    check_drill($run, $c);
    my $n = check_replays($run, $c, earlier_keys(\%moved),
                          'every earlier key of the moved slots or of (1)');
    my @left = grep { my $o = $cl->owner_of_slot($_) // 0; $o != $A->{port} } keys %moved;
    is(scalar @left, 0, 'reshard: the target owns the moved slots');
    my %on_a = map { $_ => 1 } @{ scan_keys($A->{port}, 'influencers:*') || [] };
    my @gone = grep { $moved{ key_slot($_) // -1 } && !$on_a{ redis_key($_) } }
               grep { defined $ORG_HASH } keys %ACCEPTED, keys %{ $c->{job} };
    is(scalar @gone, 0, 'reshard: the keys of the moved slots are on the target');
    diag(sprintf('RESULT cluster reshard: 1000 slots moved in %.2f s under load (%d clients, '
                 . 'two gateway nodes): ', $run->{ev1} - $run->{ev0}, $CLIENTS)
         . result('the moved slots', $run, $c, $n, $m0, $m1));
    $ACCEPTED{$_} = $c->{job}{$_} for keys %{ $c->{job} };
}

# ------------------------------------------------------------ (4) coordinated failover, wait=1

{
    my $n3 = node('wait=1 timeout=1s');
    my $n4 = node('wait=1 timeout=1s');
    my $replica = $REPLICA_OF{ $A->{id} };
    my $slots = slots_of($A->{port});
    my @warm = map { fresh('warm') } 1 .. 6;
    my %warm;
    for my $i (0 .. $#warm) {
        my $r = ($i % 2 ? $n4 : $n3)->idem($warm[$i], body => body($warm[$i]));
        $warm{ $warm[$i] } = ($r->json || {})->{jobId} if $r->status == 202;
    }
    is(scalar keys %warm, 6, 'failover: the wait=1 nodes accept keys before it (6)')
        or diag(join "\n", grep { /\[(?:error|warn)\]/ } split /\n/, $n3->error_log);
    $ACCEPTED{$_} = $warm{$_} for keys %warm;
    my $m0 = redirects();
    my $run = drill('failover', sub {
        return $cl->failover($replica->{port}, timeout => 20);
    }, nodes => [$n3, $n4], at => 2);
    my $m1 = redirects();
    my ($took) = @{ $run->{event} };
    my %role = map { $_->{id} => $_->{role} } @{ $cl->nodes };
    is($role{ $replica->{id} }, 'primary', "failover: $A->{port}'s replica "
       . "($replica->{port}) is the primary");
    is($role{ $A->{id} }, 'replica', "failover: $A->{port} its replica");
    my $c = counts($run, affected => $slots, at => $run->{ev1} - ($took // 0));
    check_drill($run, $c);
    # every key accepted before it, of any slot
    my $n = check_replays($run, $c, { %ACCEPTED }, 'every key the test accepted before');
    diag(sprintf('RESULT cluster failover: CLUSTER FAILOVER (coordinated) of a primary\'s '
                 . 'replica done in %.2f s under load (%d clients, two gateway nodes with '
                 . 'wait=1): ', $took // -1, $CLIENTS)
         . result('its slots', $run, $c, $n, $m0, $m1));
    $ACCEPTED{$_} = $c->{job}{$_} for keys %{ $c->{job} };
    $_->check_log_clean for $n3, $n4;
}

# ------------------------------------------------------------ (3) a primary killed under load

{
    my $victim = $B;
    my $slots = slots_of($victim->{port});
    my $replica = $REPLICA_OF{ $victim->{id} };
    my $m0 = redirects();
    my $run = drill('kill', sub {
        return $cl->kill_primary($victim->{port}, timeout => 20);
    }, nodes => [$n1, $n2], at => 1.5);
    my $m1 = redirects();
    my ($promoted, $took) = @{ $run->{event} };
    is($promoted, $replica->{port}, "kill: the seed $victim->{port} SIGKILLed, "
       . "its replica $replica->{port} promoted");
    my $c = counts($run, affected => $slots, at => $run->{ev1} - ($took // 0));
    check_drill($run, $c);
    ok(defined $c->{first_202},
       'kill: new keys of the killed primary\'s slots accepted after the kill');
    my $n = check_replays($run, $c, earlier_keys($slots),
                          'every earlier key of its slots or of (1)');
    diag(sprintf('RESULT cluster kill: a primary (a seed) SIGKILLed under load (%d clients, '
                 . 'two gateway nodes, wait=0), its replica promoted and the cluster stable '
                 . '%.2f s later (node timeout 1 s): ', $CLIENTS, $took // -1)
         . result('its slots', $run, $c, $n, $m0, $m1));
    my @lost = map { $_->log_lines(qr/Redis at 127\.0\.0\.1:$victim->{port} lost the connection/) }
               $n1, $n2;
    ok(scalar @lost, 'kill: an [error] names the killed node: '
       . '"Redis at 127.0.0.1:PORT lost the connection"');
    note($lost[0]) if @lost;
    $ACCEPTED{$_} = $c->{job}{$_} for keys %{ $c->{job} };
}

$_->check_log_clean for $n1, $n2;

# ------------------------------------------------------------ (5) nginx -t

{
    my $c = InfTest->new(log_level => 'info');
    $c->write_directory;
    my $try = sub {
        my ($args) = @_;
        $c->conf($c->default_conf(redis => $args));
        my ($rc, $out) = $c->test_config;
        my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
        return ($rc, $emerg // $out);
    };
    # the connections the live primaries took, so far: the count of each is
    # taken on a connection of its own
    my @ports = map { $_->{port} } live_primaries();
    my $conns = sub {
        my $n = 0;
        for my $port (@ports) {
            my $i = $cl->command($port, 'INFO', 'stats');
            $n += $1 if !ref $i && $i =~ /^total_connections_received:(\d+)/m;
        }
        return $n;
    };
    my $c0 = $conns->();
    my $S = join ',', map { "127.0.0.1:$_" } @ports;
    for my $args ("zone=jobs cluster=$S",
                  "zone=jobs cluster=$S prefix=cl password=x timeout=1s",
                  "zone=jobs cluster=$S wait=1 on_error=local") {
        my ($rc, $msg) = $try->($args);
        is($rc, 0, "nginx -t accepts: influencers_redis $args") or diag($msg);
    }
    is($conns->() - $c0 - @ports, 0, 'nginx -t made no connection to the cluster');
    my $many = join ',', map { "127.0.0.1:" . (7000 + $_) } 1 .. 17;
    for my $case (
        ['cluster= with an address', qr/one of an address, "sentinel=" and "cluster="/,
         "zone=jobs 127.0.0.1:6379 cluster=$S"],
        ['cluster= with sentinel=', qr/one of an address, "sentinel=" and "cluster="/,
         "zone=jobs cluster=$S sentinel=127.0.0.1:26379 master=mymaster"],
        ['cluster= with db=1', qr/"db=".*"cluster="/, "zone=jobs cluster=$S db=1"],
        ['a cluster address without a port', qr/"127\.0\.0\.1"/,
         'zone=jobs cluster=127.0.0.1'],
        ['a cluster address with a bad port', qr/"127\.0\.0\.1:abc"/,
         'zone=jobs cluster=127.0.0.1:abc'],
        ['a cluster address with port 0', qr/"127\.0\.0\.1:0"/,
         'zone=jobs cluster=127.0.0.1:0'],
        ['an empty cluster=', qr/cluster/, 'zone=jobs cluster='],
        ['an empty item in cluster=', qr/cluster.*,,/, "zone=jobs cluster=$S,,127.0.0.1:7000"],
        ['17 seeds', qr/cluster.*16/, "zone=jobs cluster=$many"],
        ['cluster=unix:/x', qr/unix/, 'zone=jobs cluster=unix:/x'],
    ) {
        my ($name, $what, $args) = @$case;
        my ($rc, $msg) = $try->($args);
        subtest "nginx -t refuses $name" => sub {
            isnt($rc, 0, 'nginx -t fails');
            like($msg, qr/\[emerg\]/, 'with an [emerg]');
            like($msg, $what, 'that says what is wrong') or diag($msg);
            like($msg, qr{ in \S+nginx\.conf:\d+}, 'naming the file and line');
        };
        note("$name: $msg");
    }
    $c->check_log_clean(allow_emerg => 1);
}

# ------------------------------------------------------------ (6) TLS

{
    my $t0 = Time::HiRes::time();
    my $ca = make_ca($h, 'ca');
    my $cert = make_cert($h, 'server', ca => $ca);
    my $tcl = start_cluster($h, name => 'tls', primaries => 3, replicas => 0,
                            tls => $cert, node_timeout_ms => 1000, timeout => 30);
    my @tp = grep { $_->{role} eq 'primary' } @{ $tcl->nodes };
    my $tseeds = join ',', ($tcl->seeds)[0, 1];
    note('TLS cluster of 3 primaries up in ' . elapsed($t0) . ", seeds $tseeds");
    my @tn = map {
        my $n = $n1->peer;
        $n->write_directory;
        $n->conf($n->default_conf(server => STATS_LOCATION, zone => $ZONE,
            redis => "zone=jobs cluster=$tseeds ssl=on "
                     . "ssl_trusted_certificate=$ca->{cert} timeout=1s"));
        $n->run;
        $n;
    } 1, 2;
    my (%job, @bad);
    my @keys = map { fresh('tls') } 1 .. 24;
    for my $i (0 .. $#keys) {
        my $r = $tn[$i % 2]->idem($keys[$i], body => body($keys[$i]));
        if ($r->status == 202 && !defined $r->header('idempotent-replayed')) {
            $job{ $keys[$i] } = ($r->json || {})->{jobId};
        } else {
            push @bad, "$keys[$i]: " . $r->summary;
        }
    }
    is(scalar keys %job, 24, 'TLS: 24 new keys accepted, on both nodes in turn')
        or diag(join "\n", head(5, @bad), grep { /\[(?:error|warn)\]/ }
                                            split /\n/, $tn[0]->error_log);
    @bad = ();
    for my $i (0 .. $#keys) {
        my $r = $tn[($i + 1) % 2]->idem($keys[$i], body => body($keys[$i]));
        push @bad, "$keys[$i]: " . $r->summary
            unless $r->status == 202
                   && (($r->json || {})->{jobId} // '') eq ($job{ $keys[$i] } // '-')
                   && ($r->header('idempotent-replayed') // '') eq 'true';
    }
    is(scalar @bad, 0, 'TLS: each node replays the other\'s keys with their jobIds')
        or diag(join "\n", head(5, @bad));
    my %held = map {
        $_->{port} => scalar @{ scan_keys($_->{port}, 'influencers:*', $tcl) || [] }
    } @tp;
    is(scalar(grep { $_ > 0 } values %held), 3, 'TLS: every primary holds some of the keys ('
       . join(', ', map { "$_: $held{$_}" } sort keys %held) . ')');
    my $jobs = FaultLoad::jobs_by_marker($n1);
    is(scalar(grep { keys %{ $jobs->{$_} || {} } != 1 } @keys), 0,
       'TLS: the backend got one job per key');
    $_->check_log_clean for @tn;
    $tcl->stop_cluster;
    note('TLS: done in ' . elapsed($t0));
}

note('t/56 took ' . elapsed($T0));

done_testing;
