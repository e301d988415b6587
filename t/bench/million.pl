#!/usr/bin/perl

# The load of t/bench/million.sh: forked clients on loopback sending a mix
# of requests to the gateway, and a sampler of the gateway's workers (RSS)
# and zone (influencers_stats) every few seconds.  Core Perl only.
#
#   perl million.pl --port P --count N --deadline EPOCH --clients C
#                   --api-key K --project ID --out DIR --master PID
#                   [--sample 5] [--run TAG]
#
# Each client keeps two keep-alive connections and, until its share of
# --count is sent or --deadline passes, picks one of:
#
#   new      a new Idempotency-Key                      -> 202
#   retry    a key this client had accepted, again      -> 202 replay
#   pair     a new key sent on both connections at once -> one 202, the
#            other 409 or a 202 replay (concurrent duplicates)
#   shared   the key of the current 200 ms slot, which every client sends
#            (duplicates across clients and workers)    -> 202 or 409
#   invalid  a new key, a body that fails validation    -> 422 (or 400)
#   reuse    an accepted key with another body          -> 422 REUSED
#   nokey    no Idempotency-Key                         -> 202, a new job
#
# Every body that can be accepted carries a marker in its prompt: the key
# itself, or n<run>-<client>-<i> without a key.  Files in --out:
#
#   expect.<c>   the marker of every 202 that is not a replay: each must be
#                forwarded exactly once
#   acc.<c>      the key of every keyed 202 (replays too): sort -u counts
#                the distinct accepted keys
#   broken.<c>   the marker of a request whose connection broke (none
#                expected): forwarded at most once
#   client.<c>   counts: op/status => n, and samples of unexpected answers
#   samples.tsv  time, requests sent, RSS of each worker (kB), zone stats
#
# The parent prints a progress line at each sample.

use strict;
use warnings;

use Getopt::Long ();
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Socket ();
use Time::HiRes ();
use JSON::PP ();

my %o = (clients => 4, sample => 5, run => sprintf('%x', time % 0xfffff));
Getopt::Long::GetOptions(\%o, 'port=i', 'count=i', 'deadline=f', 'clients=i',
    'api-key=s', 'project=s', 'out=s', 'master=i', 'sample=f', 'run=s')
    or die "bad options\n";
for (qw(port count deadline api-key project out master)) {
    die "--$_ is needed\n" unless defined $o{$_};
}

$SIG{PIPE} = 'IGNORE';
my $JSON = JSON::PP->new->canonical;

# ---------------------------------------------------------------- clients

my ($t0, $samples, $sent) = (Time::HiRes::time(), undef, 0);
open $samples, '>', "$o{out}/samples.tsv" or die "samples: $!";
$samples->autoflush(1);
print {$samples} join("\t", qw(seconds sent workers rss_kb rss_max_kb entries
    keyed inflight bytesInUse accepted replays conflicts anon_kb
    capacityRejections)), "\n";
sample();

pipe(my $prog_r, my $prog_w) or die "pipe: $!";
my @kids;
my $per = int(($o{count} + $o{clients} - 1) / $o{clients});
for my $c (1 .. $o{clients}) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $prog_r;
        client($c, $per);
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
close $prog_w;
$SIG{TERM} = $SIG{INT} = sub { kill 'TERM', @kids; POSIX::_exit(1); };

# ---------------------------------------------------------------- sampler

sub workers {
    my ($ppid) = @_;
    my @w;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my $st = <$fh> // '';
        close $fh;
        next unless $st =~ /^\d+ \(.*\) \S (\d+) /s && $1 == $ppid;
        open my $ch, '<', "/proc/$p/cmdline" or next;
        my $cmd = do { local $/; <$ch> } // '';
        close $ch;
        push @w, $p if $cmd =~ /worker process/;
    }
    closedir $dh;
    return sort { $a <=> $b } @w;
}

# (VmRSS, RssAnon) of a process, kB: RssAnon is its private memory, VmRSS
# also counts the pages of the zone (shared memory) that it has touched
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return (0, 0);
    my ($rss, $anon) = (0, 0);
    while (<$fh>) {
        $rss = $1 if /^VmRSS:\s+(\d+)/;
        $anon = $1 if /^RssAnon:\s+(\d+)/;
    }
    return ($rss, $anon);
}

sub stats {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port},
                                  Proto => 'tcp', Timeout => 2) or return {};
    print {$s} "GET /_stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $end = Time::HiRes::time() + 3;
    while ($sel->can_read($end - Time::HiRes::time())) {
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    close $s;
    $buf =~ s/^.*?\r\n\r\n//s;
    return eval { $JSON->decode($buf) } || {};
}

sub sample {
    my @w = workers($o{master});
    my ($sum, $max, $anon) = (0, 0, 0);
    for my $w (@w) {
        my ($r, $a) = rss_kb($w);
        $sum += $r;
        $anon += $a;
        $max = $r if $r > $max;
    }
    my $s = stats();
    my @row = (sprintf('%.1f', Time::HiRes::time() - $t0), $sent, scalar @w,
               $sum, $max,
               map({ $s->{$_} // '' } qw(entries keyed inflight bytesInUse
                                         accepted replays conflicts)),
               $anon, $s->{capacityRejections} // '');
    print {$samples} join("\t", @row), "\n";
    return \@row;
}

my $sel = IO::Select->new($prog_r);
my $next = Time::HiRes::time() + $o{sample};
my $open = 1;
while ($open) {
    my $left = $next - Time::HiRes::time();
    if ($left > 0 && $sel->can_read($left)) {
        my $n = sysread($prog_r, my $b, 4096);
        if (!$n) { $open = 0 unless defined $n && $!{EINTR}; }
        else { $sent += 1000 * length $b; }
        next;
    }
    my $row = sample();
    printf STDERR "%7.1f s  %8d sent  RSS %6d kB  zone entries %7s  inflight %s\n",
        $row->[0], $sent, $row->[3], $row->[5], $row->[7];
    $next += $o{sample};
}
for my $p (@kids) { waitpid $p, 0; }
sample();
close $samples;
exit 0;

# ---------------------------------------------------------------- one client

sub connect_gw {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port},
                                  Proto => 'tcp', Timeout => 5) or return undef;
    binmode $s;
    setsockopt($s, Socket::IPPROTO_TCP(), Socket::TCP_NODELAY(), 1);
    return $s;
}

sub send_all {
    my ($s, $bytes) = @_;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
        if (!defined $n) { next if $!{EINTR}; return 0; }
        $off += $n;
    }
    return 1;
}

# one answer: (status, replayed, close, error code); status 0 when the
# connection broke or 10 s passed
sub read_answer {
    my ($s) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $end = Time::HiRes::time() + 10;
    my ($hend, $len);
    while (1) {
        if (!defined $hend) {
            my $i = index($buf, "\r\n\r\n");
            if ($i >= 0) {
                $hend = $i + 4;
                ($len) = substr($buf, 0, $i) =~ /\r\ncontent-length:\s*(\d+)/i;
                $len //= 0;
            }
        }
        last if defined $hend && length($buf) >= $hend + $len;
        my $left = $end - Time::HiRes::time();
        return (0, 0, 1, 'timeout') if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!defined $n) { next if $!{EINTR}; return (0, 0, 1, 'reset'); }
        return (0, 0, 1, length $buf ? 'partial' : 'eof') if $n == 0;
    }
    my $head = substr($buf, 0, $hend);
    my ($st) = $head =~ m{^HTTP/1\.\d (\d{3})};
    my $rep = $head =~ /\r\nidempotent-replayed:\s*true/i ? 1 : 0;
    my $close = $head =~ /\r\nconnection:\s*close/i ? 1 : 0;
    my ($code) = substr($buf, $hend, $len) =~ /"code":"([A-Z_]+)"/;
    return ($st // 0, $rep, $close, $code // '');
}

sub client {
    my ($c, $n) = @_;
    srand($$ ^ time);
    my $path = "/v1/projects/$o{project}/influencers";
    my $auth = "Authorization: Bearer $o{'api-key'}\r\n";
    my $pre = "POST $path HTTP/1.1\r\nHost: localhost\r\n$auth"
            . "Content-Type: application/json\r\n";
    my $req = sub {
        my ($key, $body) = @_;
        return $pre . (defined $key ? "Idempotency-Key: $key\r\n" : '')
             . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body;
    };

    my %fh;
    for my $f (qw(expect acc broken)) {
        open $fh{$f}, '>', "$o{out}/$f.$c" or die "$f.$c: $!";
    }
    my (%count, @odd, @recent);
    my @conn = (undef, undef);
    my $i = 0;
    my $done = 0;
    my $marked = 0;

    # one request on connection $k, its answer read: (status, replayed, err)
    my $send = sub {
        my ($k, $bytes) = @_;
        $conn[$k] //= connect_gw() or return (0, 0, 'connect');
        send_all($conn[$k], $bytes) or do { undef $conn[$k]; return (0, 0, 'reset') };
        return (-1, 0, '');
    };
    my $recv = sub {
        my ($k) = @_;
        my ($st, $rep, $close, $code) = read_answer($conn[$k]);
        if (!$st || $close) { close $conn[$k]; undef $conn[$k]; }
        return ($st, $rep, $code);
    };
    my $one = sub {
        my ($k, $bytes) = @_;
        my ($st, $rep, $err) = $send->($k, $bytes);
        return ($st, $rep, $err) if $st == 0;
        return $recv->($k);
    };
    my $note = sub {
        my ($op, $st, $rep, $code, $marker, $keyed, $ok) = @_;
        $count{"$op $st" . ($rep ? ' replay' : '')}++;
        if (!$st) { print {$fh{broken}} "$marker\n"; return; }
        if ($st == 202) {
            print {$fh{expect}} "$marker\n" unless $rep;
            print {$fh{acc}} "$marker\n" if $keyed;
        }
        push @odd, "$op $marker: $st $code" if !$ok && @odd < 20;
    };

    while ($done < $n && Time::HiRes::time() < $o{deadline}) {
        $i++;
        my $r = rand;
        my $base = "k$o{run}-$c-$i";
        if ($r < 0.55) {                                    # new
            my ($st, $rep, $code) = $one->(0, $req->($base, qq({"prompt":"$base"})));
            $note->('new', $st, $rep, $code, $base, 1, $st == 202 && !$rep);
            if ($st == 202) {
                push @recent, $base;
                shift @recent if @recent > 200;
            }
            $done++;
        } elsif ($r < 0.67) {                               # retry
            my $key = @recent ? $recent[int rand @recent] : undef;
            if (!defined $key) { $i--; next; }
            my ($st, $rep, $code) = $one->(0, $req->($key, qq({"prompt":"$key"})));
            $note->('retry', $st, $rep, $code, $key, 1, $st == 202 && $rep);
            $done++;
        } elsif ($r < 0.73) {                               # pair
            my $bytes = $req->($base, qq({"prompt":"$base"}));
            my @a = $send->(0, $bytes);
            my @b = $send->(1, $bytes);
            @a = $recv->(0) if $a[0] == -1;
            @b = $recv->(1) if $b[0] == -1;
            my $new = grep { $_->[0] == 202 && !$_->[1] } \@a, \@b;
            my $ok = $new == 1;
            for my $x (\@a, \@b) {
                my $good = $ok && ($x->[0] == 202 || $x->[0] == 409);
                $note->('pair', $x->[0], $x->[1], $x->[2], $base, 1, $good);
            }
            if ($a[0] == 202 || $b[0] == 202) {
                push @recent, $base;
                shift @recent if @recent > 200;
            }
            $done += 2;
        } elsif ($r < 0.79) {                               # shared
            my $key = sprintf('s%s-%d', $o{run}, int(Time::HiRes::time() * 5));
            my ($st, $rep, $code) = $one->(0, $req->($key, qq({"prompt":"$key"})));
            $note->('shared', $st, $rep, $code, $key, 1, $st == 202 || $st == 409);
            $done++;
        } elsif ($r < 0.87) {                               # invalid
            my $m = "b$o{run}-$c-$i";
            my @bad = (qq({"prompt":"$m","gender":"robot"}),
                       qq({"prompt":"$m",}),
                       qq({"prompt":"$m","name":"x"}),
                       qq({"prompt":"$m${\ ('x' x 60)}"}),
                       qq(["$m"]));
            my ($st, $rep, $code) = $one->(0, $req->($m, $bad[$i % @bad]));
            $note->('invalid', $st, $rep, $code, $m, 1, $st == 422 || $st == 400);
            $done++;
        } elsif ($r < 0.89) {                               # reuse
            my $key = @recent ? $recent[int rand @recent] : undef;
            if (!defined $key) { $i--; next; }
            my ($st, $rep, $code) = $one->(0,
                $req->($key, qq({"prompt":"$key","gender":"male"})));
            $note->('reuse', $st, $rep, $code, $key, 1,
                    $st == 422 && $code eq 'IDEMPOTENCY_KEY_REUSED');
            $done++;
        } else {                                            # nokey
            my $m = "n$o{run}-$c-$i";
            my ($st, $rep, $code) = $one->(0, $req->(undef, qq({"prompt":"$m"})));
            $note->('nokey', $st, $rep, $code, $m, 0, $st == 202 && !$rep);
            $done++;
        }
        if ($done - $marked >= 1000) {
            syswrite $prog_w, '1' x int(($done - $marked) / 1000);
            $marked += 1000 * int(($done - $marked) / 1000);
        }
    }
    close $_ for values %fh;
    open my $out, '>', "$o{out}/client.$c" or die "client.$c: $!";
    print {$out} $JSON->encode({ sent => $done, count => \%count,
                                 odd => \@odd,
                                 deadline => $done < $n ? 1 : 0 }), "\n";
    close $out;
}
