package FaultLoad;

# A small load generator for the fault tests (t/60-63), in core Perl:
# forked clients on loopback, each on a keep-alive connection of its own,
# each request with a new Idempotency-Key whose value is also the body's
# prompt (the marker that tells jobs apart at the backend stand-in).
#
#   my $load = FaultLoad->start($t,
#       name    => 'm',           # the key prefix (and result file names)
#       clients => 3,             # forked client processes
#       seconds => 4,             # how long they send (from start)
#       path    => '/v1/...',     # default: the endpoint (create())
#       start   => $epoch,        # when to begin (default: 0.2 s from now)
#       max     => 5000,          # at most this many requests per client
#       timeout => 5,             # one request's bound
#       pace    => 0.002,         # seconds of pause after each request
#       keys    => [...],         # these keys instead of new ones (each
#                                 #  once, shared out among the clients)
#   );
#   ... faults ...
#   my @r = $load->finish;        # every request: {client, n, key, status,
#                                 #  err, sec, reused, replayed, t, stale}
#
# Before it reuses its connection, a client looks whether the server has
# closed it (a FIN to read), as HTTP client libraries do, and opens a new
# one if so (the request's `stale` is then 1).
#
# A request is one of: an answer (status, err '-'); or a broken
# connection: err 'eof' (closed before any byte of an answer), 'reset'
# (ECONNRESET/EPIPE), 'partial' (closed inside an answer), 'connect'
# (refused), 'timeout' (no whole answer within `timeout`), status 0.  A
# broken connection is closed and the next request opens a new one; an
# answer with Connection: close too.  Nothing is retried by the client.
#
# Each client writes its results to a file in the test dir when it ends
# (its deadline, or `max`); finish() waits for them by pid (bounded) and
# reads the files.  Clients leave by POSIX::_exit, never running the
# harness's END blocks.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use Socket ();
use Time::HiRes ();
use Test::More ();
use InfTest ();

sub start {
    my ($class, $t, %o) = @_;
    my $self = bless {
        t       => $t,
        name    => $o{name} // 'load',
        clients => $o{clients} // 3,
        path    => $o{path},
        max     => $o{max} // 5000,
        timeout => $o{timeout} // 5,
        port    => $o{port} // $t->port,
        keys    => $o{keys},
        pace    => $o{pace} // 0,
        pids    => {},
    }, $class;
    $self->{start} = $o{start} // Time::HiRes::time() + 0.2;
    $self->{end} = $self->{start} + ($o{seconds} // 3);
    $self->{prefix} = "$self->{name}-$$";

    $self->{pids} = $t->fork_clients("load-$self->{name}", $self->{clients},
                                     sub { $self->_client($_[0]) });
    return $self;
}

# The gateway of the fault tests (t/60-63), running: default_conf with
# a zone of $o{memory} (8m) and a lease of $o{lease} s (2) that one org
# may fill, forwards bounded by $o{read_timeout} (1s) and a 500 ms
# connect, the counters at STATS_LOCATION and $o{server} after them,
# $o{workers} (default_conf's), the backend with $o{control}; checked:
# the endpoint answers 202 (a test).  In list context also its counters
# then, the base of the test's.
sub gateway {
    my (%o) = @_;
    my $t = InfTest->new(log_level => 'info');
    $t->write_directory;
    my $zone = 'zone=jobs:' . ($o{memory} // '8m')
             . ' lease=' . ($o{lease} // 2) . 's org_share=100%';
    $t->conf($t->default_conf(
        ($o{workers} ? (workers => $o{workers}) : ()),
        zone            => $zone,
        read_timeout    => $o{read_timeout} // '1s',
        connect_timeout => '500ms',
        server          => InfTest::STATS_LOCATION . ($o{server} // ''),
    ));
    $t->start_backend(control => $o{control});
    $t->run;
    Test::More::is($t->create(body => '{}')->status, 202,
                   'the endpoint answers 202');
    return wantarray ? ($t, $t->stats) : $t;
}

# a fault during a load that began at $start: $on->() at $from s into it,
# $off->() at $to s; returns the times just after $on, just before $off
# and just after it
sub fault_window {
    my ($start, $from, $on, $to, $off) = @_;
    InfTest::sleep_until($start + $from);
    $on->();
    my $t_on = Time::HiRes::time();
    InfTest::sleep_until($start + $to);
    my $t_off0 = Time::HiRes::time();
    $off->();
    return ($t_on, $t_off0, Time::HiRes::time());
}

sub end_time { return $_[0]->{end}; }

# the bytes of request $n of client $c: (key, bytes)
sub _request {
    my ($self, $c, $n) = @_;
    my $key = $self->{keys}
            ? $self->{keys}[($n - 1) * $self->{clients} + $c - 1]
            : "$self->{prefix}-$c-$n";
    return unless defined $key;
    my %o = (body => qq({"prompt":"$key"}), keepalive => 1);
    $o{path} = $self->{path} if defined $self->{path};
    return ($key, $self->{t}->idem_request($key, %o));
}

sub _connect {
    my ($self) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $self->{port}, Proto => 'tcp', Timeout => 2)
        or return undef;
    binmode $sock;
    setsockopt($sock, Socket::IPPROTO_TCP(), Socket::TCP_NODELAY(), 1);
    return $sock;
}

# one request on $sock: (status, err, response)
sub _exchange {
    my ($sock, $bytes, $end) = @_;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($sock, $bytes, length($bytes) - $off, $off);
        if (!defined $n) {
            next if $!{EINTR};
            return (0, 'reset');
        }
        $off += $n;
    }
    my $sel = IO::Select->new($sock);
    my $buf = '';
    while (!InfTest::_response_complete($buf, 0)) {
        my $left = $end - Time::HiRes::time();
        return (0, 'timeout') if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($sock, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return (0, length $buf ? 'partial' : 'reset');
        }
        return (0, length $buf ? 'partial' : 'eof') if $n == 0;
    }
    my $r = InfTest::Response->parse($buf);
    return ($r->status, '-', $r);
}

sub _client {
    my ($self, $c) = @_;
    InfTest::sleep_until($self->{start});
    my ($sock, $out, $n) = (undef, '', 0);
    while (Time::HiRes::time() < $self->{end} && $n < $self->{max}) {
        $n++;
        my ($key, $bytes) = $self->_request($c, $n);
        last unless defined $key;
        my $t0 = Time::HiRes::time();
        # an idle connection the server has closed (its FIN, or anything
        # else, is there to read) is not used: what an HTTP client library
        # does before reusing a connection
        my $stale = 0;
        if ($sock && IO::Select->new($sock)->can_read(0)) {
            close $sock;
            undef $sock;
            $stale = 1;
        }
        my $reused = $sock ? 1 : 0;
        $sock ||= $self->_connect;
        my ($st, $err, $r) = (0, 'connect', undef);
        ($st, $err, $r) = _exchange($sock, $bytes, $t0 + $self->{timeout})
            if $sock;
        my $dt = Time::HiRes::time() - $t0;
        my $replayed = $r && ($r->header('idempotent-replayed') // '') eq 'true'
                       ? 1 : 0;
        if ($sock && ($err ne '-'
                      || ($r->header('connection') // '') =~ /close/i)) {
            close $sock;
            undef $sock;
        }
        $out .= sprintf("%d %d %s %d %s %.4f %d %d %.4f %d\n",
                        $c, $n, $key, $st, $err, $dt, $reused, $replayed, $t0,
                        $stale);
        # a refused connection: do not spin
        Time::HiRes::sleep(0.01) if $err eq 'connect';
        Time::HiRes::sleep($self->{pace}) if $self->{pace};
    }
    close $sock if $sock;
    return $out;
}

# waits for the clients (bounded: their deadline plus a request's timeout
# plus 5 s; a client still there then is killed by pid) and returns every
# request made, in client order
sub finish {
    my ($self) = @_;
    $self->{lost} = InfTest::reap($self->{pids},
                                  $self->{end} + $self->{timeout} + 5, 0.02);
    my (@r, @errors);
    for my $p (sort { $self->{pids}{$a} cmp $self->{pids}{$b} } keys %{ $self->{pids} }) {
        my $file = $self->{pids}{$p};
        open my $fh, '<', $file or do { push @errors, "no results in $file"; next };
        while (my $l = <$fh>) {
            chomp $l;
            if ($l =~ /^ERROR/) { push @errors, $l; next; }
            my @f = split / /, $l;
            push @r, { client => $f[0], n => $f[1], key => $f[2],
                       status => $f[3], err => $f[4], sec => $f[5],
                       reused => $f[6], replayed => $f[7], t => $f[8],
                       stale => $f[9] };
        }
        close $fh;
        unlink $file;
    }
    $self->{errors} = \@errors;
    $self->{results} = \@r;
    return @r;
}

# clients that had to be killed, and client errors (after finish())
sub lost   { return $_[0]->{lost} // 0; }
sub errors { return @{ $_[0]->{errors} || [] }; }

# ---------------------------------------------------------------------------
# The checks every fault test makes

# the load is over: every client ended by itself and without an error,
# and made many requests (@r, noted by status)
sub check_ended {
    my ($load, @r) = @_;
    Test::More::is($load->lost, 0, 'every client ended by itself');
    Test::More::is(scalar($load->errors), 0, 'no client failed')
        or Test::More::diag(join "\n", $load->errors);
    Test::More::note(scalar(@r) . ' requests: ' . tally_text(tally(@r)));
    Test::More::cmp_ok(scalar @r, '>=', 100,
        'the clients made many requests (' . scalar(@r) . ')');
}

# every request of @$acc (the 202s; "$o{what}", '202' by default) was
# forwarded once, and no key twice ("$o{when}"); returns the forwards by
# marker
sub check_forwarded_once {
    my ($t, $acc, %o) = @_;
    my $what = $o{what} // '202';
    my $when = $o{when} // ' during the load';
    my $fw = forwards_by_marker($t);
    my @not_once = grep { ($fw->{ $_->{key} } // 0) != 1 } @$acc;
    Test::More::is(scalar @not_once, 0, "every $what was forwarded exactly once ("
                                        . scalar(@$acc) . ' keys)')
        or Test::More::diag(sample(map { "$_->{key}: " . ($fw->{ $_->{key} } // 0) }
                                   @not_once));
    my @twice = grep { $fw->{$_} > 1 } keys %$fw;
    Test::More::is(scalar @twice, 0, "no key was forwarded twice$when")
        or Test::More::diag("@twice[0 .. ($#twice < 9 ? $#twice : 9)]");
    return $fw;
}

# the keys left in doubt by the fault, each sent again ($what, then "a
# 202 of its one job" and their number); returns how they were answered
sub check_retry_in_doubt {
    my ($t, $what, @keys) = @_;
    my ($how, @bad) = retry_in_doubt($t, @keys);
    Test::More::is(scalar @bad, 0, "$what a 202 of its one job ("
                                   . scalar(@keys) . ')')
        or Test::More::diag(sample(@bad));
    return $how;
}

# nginx stopped, its error log: nothing at [crit] or above, no [error]
# but nginx's own that $own matches ("$name"); returns the log's lines
sub check_log {
    my ($t, $own, $name) = @_;
    $t->stop;
    my @lines = split /\n/, $t->error_log . ($t->read_file('stderr.log') // '');
    my @hi = grep { /\[(?:alert|emerg|crit)\]|Sanitizer|==\d+==ERROR/ } @lines;
    Test::More::is(scalar @hi, 0, 'error.log: nothing at [crit] or above')
        or Test::More::diag(sample(@hi));
    my @err = grep { /\[error\]/ && !/$own/ } @lines;
    Test::More::is(scalar @err, 0, "error.log: no [error] but nginx's own $name")
        or Test::More::diag(sample(@err));
    return @lines;
}

# ---------------------------------------------------------------------------
# What the backend stand-in received, told apart by the marker (the prompt)

# {marker => forwards} for the jobs the module forwarded (uri /jobs), and
# in list context also {marker => requests} for everything else (a plain
# proxy_pass location passes the partner's body on, prompt and all)
sub forwards_by_marker {
    my ($t, $name) = @_;
    my $b = $t->_backend_files($name);
    my (%jobs, %other);
    open my $fh, '<:raw', $b->{record} or return wantarray ? ({}, {}) : {};
    while (my $l = <$fh>) {
        # the body is a JSON string inside the record: its quotes escaped
        my ($m) = $l =~ /\\"prompt\\":\\"([^"\\]*)\\"/;
        next unless defined $m;
        if ($l =~ /"uri":"\/jobs"/) { $jobs{$m}++ } else { $other{$m}++ }
    }
    close $fh;
    return wantarray ? (\%jobs, \%other) : \%jobs;
}

# marker => { jobId => forwards of it }: one key, one job means one jobId
# a marker, however often it was sent
sub jobs_by_marker {
    my ($t, $name) = @_;
    my %jobs;
    for my $r ($t->backend_requests($name)) {
        next unless $r->{uri} eq '/jobs';
        my $b = InfTest::json_decode($r->{body}) || {};
        my $m = ($b->{params} || {})->{prompt} // next;
        $jobs{$m}{ $b->{jobId} // '' }++;
    }
    return \%jobs;
}

# what the retries of keys left in doubt got: each key retried once after
# a fault, every answer a 202 of the key's one job; returns (how => count,
# problems)
sub retry_in_doubt {
    my ($t, @keys) = @_;
    my $before = jobs_by_marker($t);
    my %answer;
    $answer{$_} = $t->idem($_, body => qq({"prompt":"$_"})) for @keys;
    my $after_all = jobs_by_marker($t);
    my (%how, @bad);
    for my $key (@keys) {
        my $a = $answer{$key};
        my $after = $after_all->{$key} || {};
        my @ids = keys %$after;
        my $n0 = 0;
        $n0 += $_ for values %{ $before->{$key} || {} };
        my $n1 = 0;
        $n1 += $_ for values %$after;
        if ($a->status != 202) {
            push @bad, "$key: " . $a->summary;
            next;
        }
        my $job = ($a->json || {})->{jobId} // '';
        push @bad, "$key: " . scalar(@ids) . ' jobs at the backend' if @ids > 1;
        push @bad, "$key: answered $job, the backend has @ids"
            if @ids == 1 && $ids[0] ne $job;
        push @bad, "$key: forwarded " . ($n1 - $n0) . ' times by one retry'
            if $n1 - $n0 > 1;
        $how{ $n0 == 0 ? 'never forwarded before: a new job'
              : $n1 > $n0 ? 'the same job, sent again'
              : 'a replay of the job' }++;
    }
    return (\%how, @bad);
}

# status => count, with broken connections as their err
sub tally {
    my (@r) = @_;
    my %n;
    $n{ $_->{err} ne '-' ? $_->{err} : $_->{status} }++ for @r;
    return \%n;
}

sub tally_text {
    my ($n) = @_;
    return join(', ', map { "$_: $n->{$_}" } sort keys %$n) || 'none';
}

# a few of them, for diagnostics
sub sample {
    my (@r) = @_;
    splice @r, 10 if @r > 10;
    return join "\n", map {
        ref $_ ? "$_->{key} $_->{status} $_->{err} $_->{sec}s reused=$_->{reused}"
               : $_ } @r;
}

1;
