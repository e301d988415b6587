#!/usr/bin/perl

# Fleet mode against a Redis that is not one: a RESP server of this test's
# on loopback (one process per connection) that answers the handshake as
# Redis would, then misbehaves.  Whatever it sends, a keyed request is
# answered in time (202, or 503 UNAVAILABLE), no worker dies, no reply
# makes a worker's memory grow past a bound, and an unkeyed request still
# gets 202:
#
#   - every reply written one byte at a time: keys accepted as usual;
#   - a claim answered with bytes that are not RESP: 503, and the [error]
#     line says why (hiredis's "Protocol error");
#   - a claim answered with a bulk string of a gigabyte that keeps coming:
#     cut off at 1 megabyte (the [error] says so), 503, and the worker's
#     resident memory stays under 64 megabytes;
#   - a claim answered with an array of two billion elements: refused as
#     it is announced (hiredis would allocate them first: before, a worker
#     spent 40 s and 7 gigabytes on it), 503, memory bounded;
#   - a cluster (CLUSTER SHARDS refused, CLUSTER SLOTS naming the server
#     itself for every slot) whose MOVED names addresses that are not ones
#     (999.1.1.1, port 0, no port), a closed port, or itself again and
#     again: 503;
#   - a sentinel that names a master at port 99999, then one that answers
#     an array of the wrong kind: 503, and the [error] says the address is
#     not one.
# Each case sends 8 keyed requests at once, spread over the workers, with
# timeout=2s: replies one byte at a time take a busy machine a while.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use IO::Socket::INET;
use Digest::SHA ();
use POSIX ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my @servers;
END { local $?; kill 'KILL', @servers if @servers; waitpid $_, 0 for @servers; }

# ------------------------------------------------------------ the server

sub read_command {
    my ($c) = @_;
    my $line = <$c> // return;
    return unless $line =~ /^\*(\d+)\r\n$/;
    my @args;
    for (1 .. $1) {
        my $len = <$c> // return;
        return unless $len =~ /^\$(\d+)\r\n$/;
        my $data = '';
        while (length $data < $1 + 2) {
            my $n = read($c, $data, $1 + 2 - length $data, length $data);
            return unless $n;
        }
        push @args, substr($data, 0, $1);
    }
    return \@args;
}

sub bulk { my ($s) = @_; return '$' . length($s) . "\r\n$s\r\n"; }

# one connection: answers as Redis, but for what $mode changes
sub serve {
    my ($c, $mode, $port) = @_;
    my @sha;
    my $out = sub {
        my ($bytes) = @_;
        if ($mode eq 'split') {
            for my $b (split //, $bytes) {
                syswrite($c, $b) or return;
            }
        } else {
            syswrite($c, $bytes) or return;
        }
    };
    while (my $cmd = read_command($c)) {
        my $name = uc $cmd->[0];
        if ($name eq 'SCRIPT') {
            push @sha, Digest::SHA::sha1_hex($cmd->[2]);
            $out->(bulk($sha[-1]));
        } elsif ($name eq 'INFO') {
            $out->(bulk("run_id:" . ('a' x 40) . "\r\naof_enabled:1\r\n"
                        . "maxmemory_policy:noeviction\r\n"));
        } elsif ($name eq 'CLUSTER') {
            # the map names a node that does not exist for every slot
            $out->("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n" . bulk('127.0.0.1')
                   . ":$port\r\n" . bulk('x' x 40))
                if uc $cmd->[1] eq 'SLOTS';
            $out->("-ERR unknown subcommand\r\n") if uc $cmd->[1] ne 'SLOTS';
        } elsif ($name eq 'SENTINEL') {
            $out->($mode eq 'sentinel-port'
                   ? "*2\r\n" . bulk('127.0.0.1') . bulk('99999')
                   : "*2\r\n:1\r\n:2\r\n");
        } elsif ($name eq 'EVALSHA' || $name eq 'EVAL') {
            my $claim = $name eq 'EVAL' ? $cmd->[1] =~ /lease/ : $cmd->[1] eq $sha[0];
            if (!$claim || $mode eq 'split') {
                $out->($claim ? ":0\r\n" : ":1\r\n");
            } elsif ($mode eq 'garbage') {
                $out->("?this is not RESP\r\n");
            } elsif ($mode eq 'endless') {
                $out->("\$1073741824\r\n");
                my $chunk = 'x' x 65536;
                syswrite($c, $chunk) or last while 1;
                last;
            } elsif ($mode eq 'huge-array') {
                $out->("*2000000000\r\n");
            } elsif ($mode eq 'moved') {
                moved_reply($out, $port);
            }
        } else {
            $out->("+OK\r\n");
        }
    }
}

my $moved = 0;
sub moved_reply {
    my ($out, $port) = @_;
    my @to = ('999.1.1.1:7000', '127.0.0.1:0', '127.0.0.1', '127.0.0.1:1',
              "127.0.0.1:$port");
    $out->("-MOVED 1 " . $to[$moved++ % @to] . "\r\n");
}

sub start_server {
    my ($t, $mode) = @_;
    my $port = $t->port("fake-$mode");
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                  Listen => 64, ReuseAddr => 1)
        or die "listen $port: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{CHLD} = 'IGNORE';
        local $SIG{PIPE} = 'IGNORE';
        while (my $c = $l->accept) {
            my $k = fork;
            if (defined $k && $k == 0) {
                binmode $c;
                serve($c, $mode, $port);
                POSIX::_exit(0);
            }
            close $c;
        }
        POSIX::_exit(0);
    }
    close $l;
    push @servers, $pid;
    return $port;
}

# ------------------------------------------------------------ the gateway

sub gateway {
    my ($redis) = @_;
    my $t = InfTest->new(log_level => 'info');
    $t->start_backend;
    $t->write_directory;
    $t->conf($t->default_conf(server => STATS_LOCATION,
                              redis => "zone=jobs $redis timeout=2s connect_timeout=2s"));
    $t->run;
    return $t;
}

my $seq = 0;

# 8 keyed requests at once; their statuses
sub burst {
    my ($t, $name) = @_;
    my @keys = map { sprintf 'hostile-%s-%d-%d', $name, $$, ++$seq } 1 .. 8;
    my @p = map { $t->idem_async($_) } @keys;
    return map { InfTest::finish_async($_, 5)->status } @p;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/; }
    return 0;
}

sub case {
    my ($name, $redis, %o) = @_;
    my $t = gateway($redis);
    my @w = $t->worker_pids;
    my $t0 = Time::HiRes::time();
    my @st = burst($t, $name);
    my $took = Time::HiRes::time() - $t0;
    my %want = map { $_ => 1 } @{ $o{statuses} };
    is(scalar(grep { !$want{$_} } @st), 0,
       "$name: every keyed request answered " . join('/', @{ $o{statuses} })
       . " (" . join(',', @st) . ')');
    cmp_ok($took, '<', 5, sprintf('%s: in time (%.2f s for 8)', $name, $took));
    is($t->create(body => '{}')->status, 202, "$name: a request without a key: 202");
    is_deeply([sort $t->worker_pids], [sort @w], "$name: the same workers, alive");
    if ($o{rss}) {
        for my $w (@w) {
            cmp_ok(rss_kb($w), '<', 64 * 1024, "$name: worker $w under 64 MB resident");
        }
    }
    like($t->error_log, $o{log}, "$name: the [error] says why") if $o{log};
    note("$name: " . join(' | ', grep { /influencers: Redis/ } split /\n/, $t->error_log)
         =~ s/\d{4}\/\d\d\/\d\d \S+ //gr);
    $o{after}->($t) if $o{after};
    $t->check_log_clean;
    $t->cleanup;
}

my $h = InfTest->new;    # its ports for the fake servers

case('split', '127.0.0.1:' . start_server($h, 'split'), statuses => [202]);
case('garbage', '127.0.0.1:' . start_server($h, 'garbage'), statuses => [503],
     log => qr/\[error\].*Redis at 127\.0\.0\.1:\d+ lost the connection: a reply it cannot read \(Protocol error/);
case('endless', '127.0.0.1:' . start_server($h, 'endless'), statuses => [503],
     rss => 1, log => qr/\[error\].*Redis at \S+ (?:lost the connection: a reply over 1 megabyte|did not answer)/);
case('huge-array', '127.0.0.1:' . start_server($h, 'huge-array'), statuses => [503],
     rss => 1, log => qr/\[error\].*Redis at \S+ lost the connection: a reply it cannot read \(Out of memory\)/);

my $mp = start_server($h, 'moved');
case('moved', "cluster=127.0.0.1:$mp", statuses => [503],
     log => qr/\[error\].*Redis at 127\.0\.0\.1:\d+ (?:redirected an operation|is unreachable)/);

case('sentinel-port', 'sentinel=127.0.0.1:' . start_server($h, 'sentinel-port')
     . ' master=m', statuses => [503],
     log => qr/\[error\].*sentinel 127\.0\.0\.1:\d+ names an address that is not one/);
case('sentinel-kind', 'sentinel=127.0.0.1:' . start_server($h, 'sentinel-kind')
     . ' master=m', statuses => [503],
     log => qr/\[error\].*sentinel 127\.0\.0\.1:\d+ (?:names an address that is not one|does not name it)/);

done_testing;
