package SentinelDrill;

# Fleet drills across a Sentinel failover (t/54, t/55), on t/lib/Drill.pm's
# clients and t/lib/RedisTopo.pm's Sentinel group; core Perl only.
#
#   my $d = SentinelDrill->run($n1, ports => [$n1->port, $n2->port],
#               name => 'failover', clients => 6, seconds => 8,
#               event_at => 2, event => sub { $g->failover },
#               after => sub { ... },     # in the parent, after the event,
#                                         # while the load still runs
#               lease => 1,
#               pace => 0.02);             # each client's pause before
#                                          # every request (bounds the keys
#                                          # a drill makes, and so the
#                                          # replays checked after it)
#   $d->{ev0}, $d->{ev1}       # the event's start and end (epoch s)
#   $d->{event}                # what event->() returned, as a list
#   $d->{keys}                 # key => [requests: {key, node, t, status,
#                              #   err, job}], the drill's and the retries
#                              #   of keys left open, made after it
#   $d->{errors}               # clients that did not end by themselves
#
#   my $c = SentinelDrill::counts($d, $n1, margin => 1);
#       all / calm / window: {keys, accepted, ids_max, multi_ids,
#       backend_max, backend_multi, no_backend, foreign, problems => [...]} for every key, for the keys
#       none of whose requests began within [ev0 - margin, ev1 + margin],
#       and for the others; e5xx, e5xx_event, broken, first_bad,
#       last_bad, recovered (epoch s or undef), outage (s from the first
#       failure after ev0 to the first 202 after the last one), recovery
#       (s from ev0 to that 202, or to the first 202 after ev0 if nothing
#       failed), after_switch (s from ev1 to the first 202 begun after it)
#   SentinelDrill::replays($node, \%job_of_key) -> {ok, bad => [...],
#       good => {key => job}}:
#       each key sent once more, on $node: a 202 of its one job, marked
#       Idempotent-Replayed
#   SentinelDrill::job_of_keys($d) -> {key => job} for keys whose 202s
#       all showed one job
#
# The group's own state, through its data nodes' plaintext ports:
#   settled($g, replicas => N, timeout => 10): the master has N replicas
#       online, each caught up with the master's offset when it was asked
#   module_clients($g, $port): the connections on a data node that are
#       neither the sentinels' (named sentinel-*), replication links, nor
#       the harness's own: the gateway nodes'
#   make_replica($g, $old, $new): REPLICAOF of the old master to the new
#       one, and until its link is up (what the sentinels' +convert-to-slave
#       does, some 10 s after a failover that left the old master running)
#   calls($g, $port, $command): INFO commandstats calls of a command
#   info($g, $port, $section): INFO of a node (data or sentinel) as a hash
#   port_of('127.0.0.1:N') -> N

use strict;
use warnings;

use Time::HiRes ();
use InfTest ();
use Drill ();
use FaultLoad ();

sub port_of { my ($addr) = @_; return ($addr =~ /:(\d+)$/)[0]; }

sub run {
    my ($class, $t, %o) = @_;
    my $lease = $o{lease} // 1;
    local $SentinelDrill::Load::PACE = $o{pace} // 0.02;
    my $d = SentinelDrill::Load->start($t, ports => $o{ports},
        clients => $o{clients} // 6, seconds => $o{seconds} // 8,
        name => $o{name}, timeout => $o{timeout} // 5);
    InfTest::sleep_until($d->{start} + ($o{event_at} // 2));
    my $self = bless { name => $o{name}, t => $t, ports => $o{ports} }, $class;
    $self->{start} = $d->{start};
    $self->{end} = $d->{end};
    $self->{ev0} = Time::HiRes::time();
    my @ev = eval { $o{event}->() };
    my $died = $@;
    $self->{ev1} = Time::HiRes::time();
    $self->{event} = \@ev;
    $self->{event_error} = $died if $died;
    $self->{after} = [ eval { $o{after}->(@ev) } ] if $o{after} && !$died;
    $self->{after_error} = $@ if $@;
    my $res = $d->finish;
    $self->{errors} = $res->{errors};
    $self->{requests} = $res->{requests};
    $self->{keys} = $res->{keys};

    # the keys left open: retried once the lease is over, on both nodes
    # in turn, until a 202 (bounded)
    Time::HiRes::sleep($lease + 0.3) if @{ $res->{open} };
    my @nodes = @{ $o{nodes} || [$t] };
    for my $key (@{ $res->{open} }) {
        my $end = Time::HiRes::time() + 8;
        for (my $i = 0; Time::HiRes::time() < $end; $i++) {
            my $node = $nodes[$i % @nodes];
            my $t0 = Time::HiRes::time();
            my $r = $node->idem($key, body => qq({"prompt":"$key"}));
            my $j = $r->status == 202 ? ($r->json || {})->{jobId} // '' : '';
            push @{ $self->{keys}{$key} }, { key => $key, t => $t0,
                status => $r->status, err => $r->status ? '-' : 'broken',
                job => $j, later => 1 };
            last if $r->status == 202;
            Time::HiRes::sleep(0.2);
        }
    }
    $self->{open} = $res->{open};
    return $self;
}

sub _set { return { keys => 0, accepted => 0, ids_max => 0, multi_ids => 0,
                    backend_multi => 0, backend_max => 0, no_backend => 0,
                    foreign => 0, problems => [] }; }

sub counts {
    my ($self, $t, %o) = @_;
    my $margin = $o{margin} // 1;
    my $jobs = FaultLoad::jobs_by_marker($t);
    my ($w0, $w1) = ($self->{ev0} - $margin, $self->{ev1} + $margin);
    my %c = (all => _set(), calm => _set(), window => _set(),
             e5xx => 0, e5xx_event => 0, broken => 0);
    my ($first_bad, $last_bad);
    for my $key (sort keys %{ $self->{keys} }) {
        my @rs = @{ $self->{keys}{$key} };
        my $in = grep { !$_->{later} && $_->{t} >= $w0 && $_->{t} <= $w1 } @rs;
        my %ids;
        for my $q (@rs) {
            my $bad = $q->{status} >= 500 || $q->{err} ne '-';
            $c{e5xx}++ if $q->{status} >= 500;
            $c{e5xx_event}++ if $q->{status} >= 500 && $q->{t} >= $self->{ev0};
            $c{broken}++ if $q->{err} ne '-';
            $ids{ $q->{job} }++ if $q->{status} == 202;
            if ($bad && $q->{t} >= $self->{ev0}) {
                $first_bad = $q->{t} if !defined $first_bad || $q->{t} < $first_bad;
                $last_bad = $q->{t} if !defined $last_bad || $q->{t} > $last_bad;
            }
        }
        my $backend = $jobs->{$key} || {};
        my $n = keys %ids;
        my $b = keys %$backend;
        for my $set ($c{all}, $in ? $c{window} : $c{calm}) {
            $set->{keys}++;
            $set->{accepted}++ if $n;
            $set->{ids_max} = $n if $n > $set->{ids_max};
            $set->{backend_max} = $b if $b > $set->{backend_max};
            if ($n > 1) {
                $set->{multi_ids}++;
                push @{ $set->{problems} }, "$key: partners saw " . join(', ', sort keys %ids);
            }
            if ($b > 1) {
                $set->{backend_multi}++;
                push @{ $set->{problems} }, "$key: the backend got $b jobs: "
                    . join(', ', sort keys %$backend);
            }
            if ($n && !$b) {
                $set->{no_backend}++;
                push @{ $set->{problems} }, "$key: a 202 without a job at the backend";
            }
            my @foreign = grep { !$backend->{$_} } keys %ids;
            if ($b && @foreign) {
                $set->{foreign}++;
                push @{ $set->{problems} }, "$key: partners saw @foreign, the backend "
                    . 'never got it';
            }
        }
    }
    # recovery: the first 202 begun after the last failure
    my ($recovered, $first_ok, $after_switch);
    for my $q (sort { $a->{t} <=> $b->{t} } map { @$_ } values %{ $self->{keys} }) {
        next unless $q->{status} == 202;
        $first_ok //= $q->{t} if $q->{t} >= $self->{ev0};
        $after_switch //= $q->{t} if $q->{t} >= $self->{ev1};
        $recovered //= $q->{t} if defined $last_bad && $q->{t} > $last_bad;
    }
    @c{qw(first_bad last_bad recovered)} = ($first_bad, $last_bad, $recovered);
    $c{outage} = defined $first_bad && defined $recovered ? $recovered - $first_bad : 0;
    $c{recovery} = defined $last_bad
        ? (defined $recovered ? $recovered - $self->{ev0} : undef)
        : (defined $first_ok ? $first_ok - $self->{ev0} : undef);
    $c{after_switch} = defined $after_switch ? $after_switch - $self->{ev1} : undef;
    $c{requests} = scalar map { @$_ } values %{ $self->{keys} };
    $c{answers202} = grep { $_->{status} == 202 } map { @$_ } values %{ $self->{keys} };
    return \%c;
}

# key => its one job, for every key whose 202s showed exactly one
sub job_of_keys {
    my ($self) = @_;
    my %job;
    for my $key (keys %{ $self->{keys} }) {
        my %ids = map { $_->{job} => 1 } grep { $_->{status} == 202 }
                  @{ $self->{keys}{$key} };
        $job{$key} = (keys %ids)[0] if keys %ids == 1;
    }
    return \%job;
}

sub replays {
    my ($node, $job_of) = @_;
    my (%r, @bad, %good);
    $r{ok} = 0;
    for my $key (sort keys %$job_of) {
        my $a = $node->idem($key, body => qq({"prompt":"$key"}));
        my $j = ($a->json || {})->{jobId} // '';
        if ($a->status == 202 && $j eq $job_of->{$key}
            && ($a->header('idempotent-replayed') // '') eq 'true') {
            $r{ok}++;
            $good{$key} = $j;
        } else {
            push @bad, sprintf('%s: %s (job %s, expected %s, replayed %s)', $key,
                $a->status, $j || '-', $job_of->{$key},
                $a->header('idempotent-replayed') // '-');
        }
    }
    $r{bad} = \@bad;
    $r{good} = \%good;
    return \%r;
}

# ---------------------------------------------------------------------------
# The group

sub _info {
    my ($g, $port, $section) = @_;
    my $r = $g->command($port, 'INFO', $section);
    return {} if !defined $r || ref $r;
    my %h;
    for my $l (split /\r?\n/, $r) {
        $h{$1} = $2 if $l =~ /^([^#:][^:]*):(.*)$/;
    }
    return \%h;
}

sub info { return _info(@_); }

sub settled {
    my ($g, %o) = @_;
    my $want = $o{replicas} // 1;
    my $end = Time::HiRes::time() + ($o{timeout} // 10);
    my ($mark, $why);
    while (1) {
        my $port = eval { port_of($g->master_addr) };
        if ($port) {
            my $i = _info($g, $port, 'replication');
            $mark //= $i->{master_repl_offset};
            my @s = map { $i->{"slave$_"} // '' } 0 .. ($i->{connected_slaves} // 0) - 1;
            my @ok = grep { /state=online/ && /offset=(\d+)/ && $1 >= ($mark // 0) } @s;
            return 1 if ($i->{role} // '') eq 'master' && @ok >= $want;
            $why = "master $port: " . scalar(@ok) . " of $want replicas caught up";
        } else {
            $why = "no master: $@";
        }
        return (0, $why) if Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.1);
    }
}

sub module_clients {
    my ($g, $port) = @_;
    my $l = $g->command($port, 'CLIENT', 'LIST');
    return -1 if !defined $l || ref $l;
    my $n = 0;
    for my $line (split /\n/, $l) {
        my %f = map { split /=/, $_, 2 } grep { /=/ } split / /, $line;
        next if ($f{name} // '') =~ /^sentinel-/;
        next if ($f{flags} // '') =~ /[SM]/;
        next if ($f{cmd} // '') =~ /^client/;
        $n++;
    }
    return $n;
}

sub make_replica {
    my ($g, $old, $new, %o) = @_;
    my ($op, $np) = (port_of($old), port_of($new));
    my $r = $g->command($op, 'REPLICAOF', '127.0.0.1', $np);
    return (0, 'REPLICAOF: ' . (ref $r ? $r->{error} // '?' : $r // 'nothing'))
        unless defined $r && !ref $r && $r eq 'OK';
    my $end = Time::HiRes::time() + ($o{timeout} // 10);
    while (Time::HiRes::time() < $end) {
        my $i = _info($g, $op, 'replication');
        return 1 if ($i->{role} // '') eq 'slave'
                    && ($i->{master_link_status} // '') eq 'up';
        Time::HiRes::sleep(0.1);
    }
    return (0, "$old never linked to $new");
}

sub calls {
    my ($g, $port, $cmd) = @_;
    my $i = _info($g, $port, 'commandstats');
    my $v = $i->{"cmdstat_$cmd"} // return 0;
    return $v =~ /calls=(\d+)/ ? $1 : 0;
}



# Drill's clients, each pausing $PACE s before every request
package SentinelDrill::Load;

our @ISA = ('Drill');
our $PACE = 0.02;

sub _request {
    my $self = shift;
    Time::HiRes::sleep($PACE) if $PACE;
    return $self->SUPER::_request(@_);
}

1;
