#!/usr/bin/perl

# A stand-in for the rendering backend (and for an auth service), in core
# Perl.  HTTP/1.1 on 127.0.0.1, one forked process per connection,
# keepalive, Content-Length and chunked request bodies.
#
#   perl t/lib/backend.pl --port N --record FILE [--control FILE] [--idle SEC]
#                         [--exit-with-parent]
#
# Each request is appended to the record file as one JSON line:
#   {"method":..,"uri":..,"version":..,"headers":[[name,value],...],
#    "body":..,"time":..,"pid":..,"dup":0|1}
# (names as sent; the body as bytes, each byte one character).
#
# Like the backend CONTRACT 4 asks for, it dedupes on the forward's
# Idempotency-Key: a key seen before is a job it already has ("dup":1, one
# influencer whatever the number of sends), and it answers as the control
# file says either way.  Seen keys are files under FILE.seen/, created
# with O_EXCL, so that every connection process agrees.
#
# The answer follows the control file, read again for every request:
#   {"status":202, "delay":0, "body":"{...}", "content_type":"application/json",
#    "headers":{"X-Org":"org_acme"} or [["X-Org","org_acme"]],
#    "close":false,           answer with Connection: close, then close
#    "chunked":false,         send the body with chunked encoding
#    "drop":false,            close the connection without answering
#    "rules":[{"header":"authorization","value":"Bearer k", ...overrides},
#             {"uri":"/auth", ...overrides}]}   first match wins
# Defaults: 202 with {"accepted":true}, no delay, keepalive.
#
# SIGTERM/SIGINT: the server stops and ends its connection processes.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use Fcntl qw(:flock O_CREAT O_EXCL O_WRONLY);
use POSIX ();
use Time::HiRes ();
use Getopt::Long ();

my ($port, $record, $control);
my $idle = 30;
my $exit_with_parent = 0;

Getopt::Long::GetOptions(
    'port=i'    => \$port,
    'record=s'  => \$record,
    'control=s' => \$control,
    'idle=i'    => \$idle,
    'exit-with-parent' => \$exit_with_parent,
) or die "usage: $0 --port N --record FILE [--control FILE] [--idle SEC]"
         . " [--exit-with-parent]\n";

die "usage: $0 --port N --record FILE [--control FILE]\n"
    unless $port && $record;

my $JSON = JSON::PP->new->utf8->canonical;

my %REASON = (
    200 => 'OK', 201 => 'Created', 202 => 'Accepted', 204 => 'No Content',
    301 => 'Moved Permanently', 302 => 'Found', 304 => 'Not Modified',
    400 => 'Bad Request', 401 => 'Unauthorized', 403 => 'Forbidden',
    404 => 'Not Found', 409 => 'Conflict', 422 => 'Unprocessable Entity',
    429 => 'Too Many Requests', 500 => 'Internal Server Error',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout',
);

$SIG{PIPE} = 'IGNORE';

my $server = IO::Socket::INET->new(
    LocalAddr => '127.0.0.1',
    LocalPort => $port,
    Proto     => 'tcp',
    Listen    => 128,
    ReuseAddr => 1,
) or die "backend: cannot listen on 127.0.0.1:$port: $!\n";

my $parent = $$;
my $grandparent = getppid();
my %kids;

sub reap {
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
        delete $kids{$pid};
    }
}

my $stopping = 0;
$SIG{TERM} = $SIG{INT} = sub { $stopping = 1; };
$SIG{CHLD} = \&reap;

my $listen_sel = IO::Select->new($server);

while (!$stopping) {
    reap();
    last if $exit_with_parent && getppid() != $grandparent;
    next unless $listen_sel->can_read(0.5);
    my $client = $server->accept;
    reap();
    unless ($client) {
        next;    # EINTR (a child ended, or a signal)
    }
    my $pid = fork;
    if (!defined $pid) {
        close $client;
        next;
    }
    if ($pid == 0) {
        $SIG{TERM} = $SIG{INT} = 'DEFAULT';
        $SIG{CHLD} = 'DEFAULT';
        close $server;
        serve($client);
        POSIX::_exit(0);
    }
    $kids{$pid} = 1;
    close $client;
}

# stop: end the connection processes by their pids
kill 'TERM', keys %kids;
my $end = Time::HiRes::time() + 2;
while (%kids && Time::HiRes::time() < $end) {
    reap();
    Time::HiRes::sleep(0.02);
}
kill 'KILL', keys %kids if %kids;
reap();
exit 0;

# ---------------------------------------------------------------------------

sub read_control {
    return {} unless defined $control;
    open my $fh, '<:raw', $control or return {};
    local $/;
    my $text = <$fh>;
    close $fh;
    my $c = eval { $JSON->decode($text) };
    return ref $c eq 'HASH' ? $c : {};
}

# 1 if this Idempotency-Key was seen before (a job sent again)
sub seen_before {
    my ($key) = @_;
    return 0 unless defined $key && $key =~ /^[A-Za-z0-9_-]{1,128}$/;
    my $dir = "$record.seen";
    mkdir $dir unless -d $dir;
    if (sysopen(my $fh, "$dir/$key", O_CREAT | O_EXCL | O_WRONLY)) {
        close $fh;
        return 0;
    }
    return $!{EEXIST} ? 1 : 0;
}

sub record_request {
    my ($req) = @_;
    open my $fh, '>>:raw', $record or return;
    flock $fh, LOCK_EX;
    seek $fh, 0, 2;
    print {$fh} $JSON->encode($req), "\n";
    close $fh;    # flushes, then unlocks
}

# fills $$buf from the socket until $want returns true; 0 on EOF/idle
sub fill {
    my ($sock, $buf, $want) = @_;
    my $sel = IO::Select->new($sock);
    my $deadline = time + $idle;
    until ($want->()) {
        return 0 if getppid() != $parent;
        return 0 if time > $deadline;
        next unless $sel->can_read(1);
        my $n = sysread($sock, $$buf, 65536, length $$buf);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return 0;
        }
        return 0 if $n == 0;
    }
    return 1;
}

sub serve {
    my ($sock) = @_;
    binmode $sock;
    my $buf = '';

    while (1) {
        fill($sock, \$buf, sub { index($buf, "\r\n\r\n") >= 0 }) or return;

        my $i = index($buf, "\r\n\r\n");
        my $head = substr($buf, 0, $i);
        substr($buf, 0, $i + 4) = '';

        my ($line, @lines) = split /\r\n/, $head;
        my ($method, $uri, $version) = split / /, $line, 3;
        $version //= '';

        my @headers;
        for my $l (@lines) {
            if ($l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/) {
                push @headers, [$1, $2];
            }
        }
        my %h;
        push @{ $h{lc $_->[0]} }, $_->[1] for @headers;

        my $body = '';
        if (($h{'transfer-encoding'}[0] // '') =~ /chunked/i) {
            while (1) {
                fill($sock, \$buf, sub { $buf =~ /\r\n/ }) or return;
                $buf =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n// or return;
                my $n = hex $1;
                if ($n == 0) {
                    fill($sock, \$buf, sub { $buf =~ /^(?:[^\r\n]+\r\n)*\r\n/ })
                        or return;
                    $buf =~ s/^(?:[^\r\n]+\r\n)*\r\n//;
                    last;
                }
                fill($sock, \$buf, sub { length($buf) >= $n + 2 }) or return;
                $body .= substr($buf, 0, $n);
                substr($buf, 0, $n + 2) = '';
            }
        } elsif (defined(my $cl = $h{'content-length'}[0])) {
            fill($sock, \$buf, sub { length($buf) >= $cl }) or return;
            $body = substr($buf, 0, $cl);
            substr($buf, 0, $cl) = '';
        }

        my $c = read_control();
        for my $rule (@{ $c->{rules} || [] }) {
            my $match = 1;
            if (defined $rule->{header}) {
                my $v = $h{lc $rule->{header}};
                $match = 0 unless $v && defined $rule->{value}
                                  && $v->[0] eq $rule->{value};
            }
            if (defined $rule->{uri}) {
                $match = 0 unless $uri eq $rule->{uri};
            }
            next unless $match;
            $c = { %$c, %$rule };
            last;
        }

        record_request({
            method  => $method,
            uri     => $uri,
            version => $version,
            headers => \@headers,
            body    => $body,
            time    => Time::HiRes::time(),
            pid     => $$,
            dup     => seen_before($h{'idempotency-key'}[0]),
        });

        Time::HiRes::sleep($c->{delay}) if $c->{delay};

        return if $c->{drop};

        my $status = $c->{status} || 202;
        my $rbody = exists $c->{body} ? $c->{body} : '{"accepted":true}';
        $rbody = '' if $status == 204 || $status == 304 || $method eq 'HEAD';
        my $close = $c->{close}
                    || ($h{connection}[0] // '') =~ /close/i
                    || $version eq 'HTTP/1.0';

        my $resp = "HTTP/1.1 $status " . ($REASON{$status} || 'Status') . "\r\n";
        if ($status != 204 && $status != 304) {
            $resp .= 'Content-Type: '
                     . ($c->{content_type} // 'application/json') . "\r\n";
            if ($c->{chunked}) {
                $resp .= "Transfer-Encoding: chunked\r\n";
                my $chunked = '';
                my $b = $rbody;
                while (length $b) {
                    my $piece = substr($b, 0, 1000, '');
                    $chunked .= sprintf("%x\r\n%s\r\n", length $piece, $piece);
                }
                $rbody = $chunked . "0\r\n\r\n";
            } else {
                $resp .= 'Content-Length: ' . length($rbody) . "\r\n";
            }
        }
        my $extra = $c->{headers} || {};
        my @extra = ref $extra eq 'HASH'
                    ? map { [$_, $extra->{$_}] } sort keys %$extra
                    : @$extra;
        $resp .= "$_->[0]: $_->[1]\r\n" for @extra;
        $resp .= $close ? "Connection: close\r\n" : "Connection: keep-alive\r\n";
        $resp .= "\r\n" . $rbody;

        my $off = 0;
        while ($off < length $resp) {
            my $n = syswrite($sock, $resp, length($resp) - $off, $off);
            return unless defined $n;
            $off += $n;
        }
        return if $close;
    }
}
