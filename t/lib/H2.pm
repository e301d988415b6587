package H2;

# A small HTTP/2 client for the tests that leave mid-request: one
# connection, requests on streams of our choice, and the ways a partner
# leaves (RST_STREAM, GOAWAY, closing the connection) at any moment.
# Cleartext HTTP/2 with prior knowledge (listen ... http2), or TLS with
# ALPN h2 through `openssl s_client` as the pipe (tls => 1).
#
#   my $c = H2->connect(port => $p, tls => 0, dir => $t->dir);
#   $c->request(1, path => ..., headers => [name => value, ...], body => ..);
#   $c->rst(1);                 # RST_STREAM CANCEL
#   $c->goaway;                 # GOAWAY NO_ERROR
#   my $r = $c->response(1, 5); # an InfTest::Response (status 0: none),
#                               # with {rst} and {goaway}
#   $c->close;                  # the connection, at once
#
# Headers go as HPACK literals without Huffman; answers are decoded with
# t/lib/HPACK.pm.  Flow control is left at its defaults: the requests here
# are small.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes ();
use HPACK qw(:all);

sub connect {
    my ($class, %o) = @_;
    my $self = bless { in => "", dyn => [], streams => {}, eof => 0,
                       tls => $o{tls} }, $class;

    if ($o{tls}) {
        @$self{qw(out rd pid)} =
            tls_pipe($o{port}, ($o{dir} // '/tmp') . '/s_client.log');
    } else {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $o{port}, Proto => 'tcp', Timeout => 5)
            or die "connect: $!";
        binmode $s;
        @$self{qw(out rd)} = ($s, $s);
    }

    $self->_put("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . h2_frame(4, 0, 0, ''));
    return $self;
}

# `openssl s_client` ($openssl, default from PATH) as the TLS pipe to
# 127.0.0.1:$port with ALPN h2, its stderr appended to $log: (the pipe to
# it, the pipe from it, its pid), for end_pipe() to stop.  Also t/51.
sub tls_pipe {
    my ($port, $log, $openssl) = @_;
    pipe(my $c_in, my $to_c) or die "pipe: $!";
    pipe(my $from_c, my $c_out) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $to_c;
        close $from_c;
        open STDIN, '<&', $c_in or POSIX::_exit(126);
        open STDOUT, '>&', $c_out or POSIX::_exit(126);
        open STDERR, '>>', $log;
        { no warnings q(exec);
          exec $openssl // 'openssl', 's_client', '-connect', "127.0.0.1:$port",
               '-servername', 'localhost', '-alpn', 'h2', '-quiet',
               '-nocommands', '-verify_quiet'; }
        POSIX::_exit(127);
    }
    close $c_in;
    close $c_out;
    binmode $to_c;
    binmode $from_c;
    return ($to_c, $from_c, $pid);
}

# the TLS pipe's process stopped: TERM, KILL if it is still there in 3 s
sub end_pipe {
    my ($pid) = @_;
    kill 'TERM', $pid;
    my $end = Time::HiRes::time() + 3;
    while (waitpid($pid, POSIX::WNOHANG()) == 0) {
        if (Time::HiRes::time() > $end) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            last;
        }
        Time::HiRes::sleep(0.02);
    }
}

# the whole frames at the start of $$in, taken off it: [type, flags,
# stream id, payload] each (also t/18's and t/51's clients)
sub take_frames {
    my ($in) = @_;
    my @f;
    while (length($$in) >= 9) {
        my ($len, $type, $flags, $sid) =
            (unpack('N', "\0" . substr($$in, 0, 3)),
             unpack('CCN', substr($$in, 3, 6)));
        last if length($$in) < 9 + $len;
        push @f, [$type, $flags, $sid & 0x7fffffff, substr($$in, 9, $len)];
        substr($$in, 0, 9 + $len, '');
    }
    return @f;
}

# a frame of stream $st ({headers => [], body => '', hblock => ''}, its
# answer read into it, {ended} once it ends, {rst} the RST_STREAM's code):
# HEADERS, CONTINUATION, DATA or RST_STREAM; 0 for another type
sub stream_frame {
    my ($st, $type, $flags, $p, $dyn) = @_;
    if ($type == 1 || $type == 9) {
        $st->{hblock} .= $p;
        if ($flags & 4) {
            push @{ $st->{headers} }, hpack_decode($st->{hblock}, $dyn);
            $st->{hblock} = '';
        }
        $st->{ended} = 1 if $flags & 1;
    } elsif ($type == 0) {
        $st->{body} .= $p;
        $st->{ended} = 1 if $flags & 1;
    } elsif ($type == 3) {
        $st->{rst} = unpack('N', $p);
        $st->{ended} = 1;
    } else {
        return 0;
    }
    return 1;
}

# reads with $read->($wait) (-1 at EOF) until stream $st has ended, EOF
# or the time $until (also t/18's and t/51's clients)
sub read_until {
    my ($read, $st, $until) = @_;
    while (!$st->{ended} && (my $left = $until - Time::HiRes::time()) > 0) {
        last if $read->($left) < 0;
    }
}

# an answer's decoded header fields ([name, value] each) and body as the
# text of an HTTP/1 answer, for InfTest::Response->parse: (text, :status).
# A value HPACK could not decode is written $undecodable.
sub answer_text {
    my ($headers, $body, $undecodable) = @_;
    my ($status) = map { $_->[1] } grep { $_->[0] eq ':status' } @$headers;
    my $text = 'HTTP/2.0 ' . ($status // '000') . "\r\n"
             . join('', map { "$_->[0]: " . ($_->[1] // $undecodable) . "\r\n" }
                        grep { $_->[0] !~ /^:/ } @$headers)
             . "\r\n" . $body;
    return ($text, $status);
}

sub _put {
    my ($self, $bytes) = @_;
    local $SIG{PIPE} = 'IGNORE';
    return put_all($self->{out}, $bytes);
}

# all of $bytes written to $fh (a blocking socket or pipe): 1, or 0 once
# a write fails (also t/18's and t/51's clients)
sub put_all {
    my ($fh, $bytes) = @_;
    while (length $bytes) {
        my $w = syswrite($fh, $bytes);
        return 0 unless defined $w;
        substr($bytes, 0, $w, '');
    }
    return 1;
}

# POST of the endpoint unless o{method}; END_STREAM on the last frame
sub request {
    my ($self, $sid, %o) = @_;
    my @h = (':method' => $o{method} // 'POST',
             ':scheme' => $o{scheme} // ($self->{tls} ? 'https' : 'http'),
             ':path' => $o{path}, ':authority' => 'localhost',
             @{ $o{headers} || [] });
    my $block = '';
    $block .= hpack_literal(splice @h, 0, 2) while @h;
    my $body = $o{body} // '';
    my $frames = h2_frame(1, 4 | (length $body ? 0 : 1), $sid, $block);
    $frames .= h2_frame(0, 1, $sid, $body) if length $body;
    $self->{streams}{$sid} = { headers => [], body => '', hblock => '' };
    return $self->_put($frames);
}

sub rst {
    my ($self, $sid, $code) = @_;
    return $self->_put(h2_frame(3, 0, $sid, pack('N', $code // 8)));
}

sub goaway {
    my ($self, $code) = @_;
    return $self->_put(h2_frame(7, 0, 0, pack('NN', 0, $code // 0)));
}

# reads what is there within $wait seconds; -1 at EOF
sub _read {
    my ($self, $wait) = @_;
    return -1 if $self->{eof};
    my $sel = IO::Select->new($self->{rd});
    return 0 unless $sel->can_read($wait < 0 ? 0 : $wait);
    my $n = sysread($self->{rd}, $self->{in}, 65536, length $self->{in});
    if (!$n) {
        $self->{eof} = 1;
        return -1;
    }
    for my $f (take_frames(\$self->{in})) {
        my ($type, $flags, $sid, $p) = @$f;
        my $len = length $p;
        my $st = $self->{streams}{$sid};
        if ($type == 4 && !($flags & 1)) {
            $self->_put(h2_frame(4, 1, 0, ''));
        } elsif ($type == 6 && !($flags & 1)) {
            $self->_put(h2_frame(6, 1, 0, $p));
        } elsif ($type == 7) {
            $self->{goaway} = unpack('N', substr($p, 4, 4));
        } elsif ($st && stream_frame($st, $type, $flags, $p, $self->{dyn})) {
            # keep the windows open for answers of any size
            $self->_put(h2_frame(8, 0, 0, pack('N', $len))
                        . h2_frame(8, 0, $sid, pack('N', $len)))
                if $type == 0 && $len;
        }
    }
    return 1;
}

# the answer on stream $sid, read until it ends, EOF or $timeout
sub response {
    my ($self, $sid, $timeout) = @_;
    my $st = $self->{streams}{$sid} or return undef;
    my $end = Time::HiRes::time() + ($timeout // 5);
    read_until(sub { $self->_read(@_) }, $st, $end);
    my $raw = @{ $st->{headers} }
        ? (answer_text($st->{headers}, $st->{body}, ''))[0] : '';
    my $r = length $raw ? InfTest::Response->parse($raw, 0)
                        : InfTest::Response->failed('no answer');
    $r->{rst} = $st->{rst};
    $r->{goaway} = $self->{goaway};
    $r->{timed_out} = !$st->{ended} && !$self->{eof};
    return $r;
}

sub close {
    my ($self) = @_;
    close $self->{out} if $self->{out};
    close $self->{rd} if $self->{rd} && $self->{rd} != $self->{out};
    if (my $pid = delete $self->{pid}) {
        end_pipe($pid);
    }
    $self->{out} = $self->{rd} = undef;
    return;
}

sub DESTROY { $_[0]->close if $_[0]{out}; }

1;
