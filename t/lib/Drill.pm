package Drill;

# A fleet drill (ISSUE 14): forked clients that each make new keys and
# retry every key until it is accepted, on both gateway nodes in turn, as
# a partner with an idempotent client would; once a key is accepted it is
# sent once more to the other node (a retry after a lost answer), then the
# client moves on.  A fault is made meanwhile by the test.  Every request
# is recorded: key, node, time, status or broken connection, the jobId of
# a 202.
#
#   my $d = Drill->start($t, ports => [$p1, $p2], clients => 20,
#                        seconds => 6, name => 'aof', pause => 0.05);
#   ... the fault ...
#   my $report = $d->finish;   # see report()
#
# A key the client could not get accepted before its deadline is given
# back in the report's `open` list, for the test to retry once the fault
# is over.  Clients leave by POSIX::_exit and write their records to a
# file each, read by finish() (bounded wait, by pid).

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use Time::HiRes ();
use InfTest ();

sub start {
    my ($class, $t, %o) = @_;
    my $self = bless {
        t       => $t,
        ports   => $o{ports},
        name    => $o{name} // 'drill',
        clients => $o{clients} // 20,
        pause   => $o{pause} // 0.05,
        timeout => $o{timeout} // 5,
        pids    => {},
    }, $class;
    $self->{start} = Time::HiRes::time() + 0.2;
    $self->{end} = $self->{start} + ($o{seconds} // 6);

    $self->{pids} = $t->fork_clients("drill-$self->{name}", $self->{clients},
                                     sub { $self->_client($_[0]) });
    return $self;
}

sub _request {
    my ($self, $port, $key) = @_;
    my $t = $self->{t};
    my $bytes = $t->idem_request($key, body => qq({"prompt":"$key"}));
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                     Proto => 'tcp', Timeout => 2)
        or return (0, 'connect', '');
    binmode $sock;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($sock, $bytes, length($bytes) - $off, $off);
        return (0, 'reset', '') unless defined $n;
        $off += $n;
    }
    my ($buf, $sel) = ('', IO::Select->new($sock));
    my $end = Time::HiRes::time() + $self->{timeout};
    while ((my $left = $end - Time::HiRes::time()) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread($sock, $buf, 65536, length $buf);
        next if !defined $n && $!{EINTR};
        last unless $n;
    }
    close $sock;
    return (0, 'eof', '') unless length $buf;
    my ($status) = $buf =~ m{^HTTP/1\.\d (\d{3})};
    return (0, 'partial', '') unless $status;
    my ($job) = $buf =~ /"jobId":"(job_[0-9A-Z]{26})"/;
    return ($status, '-', $job // '');
}

sub _client {
    my ($self, $c) = @_;
    my @ports = @{ $self->{ports} };
    my $prefix = "$self->{name}-$$-$c";
    my $out = '';
    my $wait = $self->{start} - Time::HiRes::time();
    Time::HiRes::sleep($wait) if $wait > 0;

    my $n = 0;
    while (Time::HiRes::time() < $self->{end}) {
        my $key = "$prefix-" . ++$n;
        my $node = $n % @ports;
        my $accepted = 0;
        while (Time::HiRes::time() < $self->{end}) {
            my $t0 = Time::HiRes::time();
            my ($status, $err, $job) = $self->_request($ports[$node], $key);
            $out .= sprintf("%s %d %.4f %d %s %s\n", $key, $node, $t0, $status,
                            $err, $job || '-');
            if ($status == 202) {
                $accepted = 1;
                last;
            }
            $node = ($node + 1) % @ports;
            Time::HiRes::sleep($self->{pause});
        }
        if ($accepted) {
            # the retry of a partner whose answer was lost, elsewhere
            $node = ($node + 1) % @ports;
            my $t0 = Time::HiRes::time();
            my ($status, $err, $job) = $self->_request($ports[$node], $key);
            $out .= sprintf("%s %d %.4f %d %s %s\n", $key, $node, $t0, $status,
                            $err, $job || '-');
        } else {
            $out .= "OPEN $key\n";
        }
    }
    return $out;
}

# waits for the clients, reads their records:
#   { requests => [...], keys => {key => [requests]}, open => [keys],
#     errors => [...] }
sub finish {
    my ($self) = @_;
    InfTest::reap($self->{pids}, $self->{end} + 15, 0.05);
    my (@req, %keys, @open, @errors);
    for my $c (1 .. $self->{clients}) {
        my $text = $self->{t}->read_file("drill-$self->{name}-$c.txt");
        unless (defined $text) {
            push @errors, "client $c left no records";
            next;
        }
        for my $l (split /\n/, $text) {
            if ($l =~ /^OPEN (\S+)$/) { push @open, $1; next; }
            if ($l =~ /^ERROR (.*)$/) { push @errors, "client $c: $1"; next; }
            my ($key, $node, $t, $status, $err, $job) = split / /, $l;
            my $r = { key => $key, node => $node, t => $t, status => $status,
                      err => $err, job => $job eq '-' ? '' : $job };
            push @req, $r;
            push @{ $keys{$key} }, $r;
        }
    }
    return { requests => \@req, keys => \%keys, open => \@open,
             errors => \@errors };
}

# the drill's counts, with the backend's view (jobs by prompt) and the
# answers to the retries of open keys made after the fault:
#   keys, accepted (keys with a 202), answers202, jobs_per_key (most
#   distinct jobIds any key showed partners), backend_per_key (most
#   distinct jobs the backend got for a key), keys_without_backend_job,
#   e5xx, broken, recovery (s from fault_end to the last 5xx or broken
#   answer, 0 if none after it), problems (strings)
sub report {
    my ($class, $d, %o) = @_;
    my $jobs = $o{backend_jobs};
    my (%r, @problems);
    $r{keys} = scalar keys %{ $d->{keys} };
    my ($e5xx, $broken, $a202, $acc, $last_bad) = (0, 0, 0, 0, 0);
    my ($max_ids, $max_backend, $no_backend) = (0, 0, 0);
    for my $key (keys %{ $d->{keys} }) {
        my @rs = (@{ $d->{keys}{$key} }, @{ $o{later}{$key} || [] });
        my %ids;
        for my $q (@rs) {
            $e5xx++ if $q->{status} >= 500;
            $broken++ if $q->{err} ne '-';
            if ($q->{status} == 202) {
                $a202++;
                $ids{ $q->{job} }++;
            }
            $last_bad = $q->{t} if ($q->{status} >= 500 || $q->{err} ne '-')
                                   && $q->{t} > $last_bad;
        }
        my $n = keys %ids;
        $acc++ if $n;
        $max_ids = $n if $n > $max_ids;
        push @problems, "$key: partners saw " . join(', ', sort keys %ids) if $n > 1;
        my $b = keys %{ $jobs->{$key} || {} };
        $max_backend = $b if $b > $max_backend;
        push @problems, "$key: the backend got $b jobs" if $b > 1;
        if ($n && !$b) {
            $no_backend++;
            push @problems, "$key: a 202 without a job at the backend";
        }
        if ($n == 1 && $b == 1 && !$jobs->{$key}{ (keys %ids)[0] }) {
            push @problems, "$key: partners saw another job than the backend got";
        }
    }
    @r{qw(accepted answers202 jobs_per_key backend_per_key keys_without_backend_job
          e5xx broken)} = ($acc, $a202, $max_ids, $max_backend, $no_backend, $e5xx, $broken);
    $r{recovery} = ($o{fault_end} && $last_bad > $o{fault_end})
                   ? $last_bad - $o{fault_end} : 0;
    $r{problems} = \@problems;
    return \%r;
}

1;
