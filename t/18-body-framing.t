#!/usr/bin/perl

# CONTRACT 1 (body size) and 2 (the 413 row: "the decoded body's bytes,
# however it is framed"): a body within influencers_body_limit is accepted
# whether it comes with Content-Length, in 1-byte chunks, in slow writes,
# through one of nginx's temporary files or in HTTP/2 DATA frames without a
# content-length; a body over it is one JSON 413 that forwards nothing and
# stores nothing.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();
use InfTest qw(:all);
use HPACK qw(:all);
use H2 ();

plan skip_all => 'module not built: ' . module_path() unless have_module();

# The main server: the default limit (4k) and an explicit
# client_body_buffer_size (the platform default may be 16k), so that 2000
# bytes in 1-byte chunks (12 KB on the wire) spill to a temporary file.
# "small": limit and buffer 1k, its own client_body_temp_path.  "mirror":
# the body is read by the mirror module before the handler runs.  "h2": h2c.
my $t = InfTest->setup(server => 'client_body_buffer_size 8k;',
                       http => endpoint_server(port => 'SMALL',
                                   top => "client_body_buffer_size 1k;\n"
                                        . '        client_body_temp_path '
                                        . '%%TESTDIR%%/small_body_temp;',
                                   location => 'influencers_body_limit 1k;')
                             . endpoint_server(port => 'MIRROR',
                                   top => 'client_body_buffer_size 8k;',
                                   location => 'mirror /_mirror;',
                                   server => 'location = /_mirror { internal; return 204; }')
                             . endpoint_server(port => 'H2', listen => ' http2',
                                   top => 'client_body_buffer_size 8k;'));

my $P = 'PAYLOAD_TOO_LARGE';
my $dir = $t->dir;

# A valid body of exactly $n bytes, its fields at both ends and blanks in
# between: bytes lost, doubled or out of order on the way break the JSON or
# the fields.  P_FEMALE's default gender is female: "male" in the forward
# means the body was read.
sub body_of {
    my ($n, $prompt, %o) = @_;
    my $head = '{"gender":"male",';
    my $tail = qq{"prompt":"$prompt"} . ($o{extra} // '') . '}';
    my $pad = $n - length($head) - length($tail);
    die "body_of: $n bytes is too short" if $pad < 0;
    return $head . (' ' x $pad) . $tail;
}

sub ones { my ($body) = @_; return [(1) x length $body]; }

# the jobs the backend has received so far
my $forwarded = 0;

sub forwards_now {
    # a request refused after the fact would be forwarded just after its
    # answer: give such a forward the time to show
    Time::HiRes::sleep(0.3);
    return scalar(my @r = $t->backend_requests);
}

sub check_forwarded_once {
    my ($prompt, $name) = @_;
    my @r = $t->wait_backend_requests($forwarded + 1);
    is(scalar @r, $forwarded + 1, "$name: forwarded once");
    $forwarded = @r;
    my $job = json_decode(($r[-1] || {})->{body} // '') || {};
    is_deeply($job->{params},
              { gender => 'male', ageRange => 'young_adult',
                prompt => $prompt },
              "$name: the forward carries the body's params");
}

sub check_not_forwarded {
    my ($name) = @_;
    is(forwards_now(), $forwarded, "$name: nothing forwarded");
}

# nginx's [warn] when it buffers a body to a file, in either temp path
my $SPILL = 'a client request body is buffered to a temporary file';
my $TEMP_RE = qr/\Q$SPILL $dir\/client_body_temp\/\E/;
my $SMALL_TEMP_RE = qr/\Q$SPILL $dir\/small_body_temp\/\E/;

# ------------------------------------------------------------ 1-byte chunks

my $b2000 = body_of(2000, 'one byte at a time');
my $spills = $t->count_log($TEMP_RE);
my $first = $t->idem('framing-a', body => $b2000, chunked => ones($b2000),
                     timeout => 10);
check_new_job($first,
    'a 2000-byte body in 1-byte chunks (12 KB framed, past the read '
    . 'buffer): 202');
cmp_ok($t->count_log($TEMP_RE), '>', $spills,
       'the 1-byte-chunked body went through a temporary file');
check_forwarded_once('one byte at a time', '1-byte chunks');

check_replay($t->idem('framing-a', body => $b2000, chunked => ones($b2000),
                      timeout => 10), $first,
             'the same 1-byte-chunked body and key: the first answer replayed');
check_replay($t->idem('framing-a', body => $b2000), $first,
             'the same body with Content-Length: replayed (framing is not '
             . 'part of the request)');
check_not_forwarded('replays');

# the body read back from the file is validated whole: a problem at its end
my $bad = body_of(2000, 'bad tail', extra => ',"color":"red"');
check_validation($t->create(body => $bad, chunked => ones($bad), timeout => 10),
                 'Invalid body.',
                 { fieldErrors => { color => ['Unrecognized key.'] } },
                 'a 1-byte-chunked body read back from the file: an unknown '
                 . 'key at its end is a 422');
check_not_forwarded('the 422');

# ------------------------------------------------------------ at the limit

for my $n (4095, 4096) {
    my $b = body_of($n, "exactly $n bytes");
    check_new_job($t->create(body => $b, chunked => ones($b), timeout => 10),
        "a $n-byte body (limit 4096) in 1-byte chunks: 202");
    check_forwarded_once("exactly $n bytes", "$n bytes in 1-byte chunks");
}

# ------------------------------------------------------------ over the limit

my $b4097 = body_of(4097, 'one byte too many');
check_error($t->idem('framing-c', body => $b4097, chunked => ones($b4097),
                     timeout => 10),
            413, $P, undef, 'a 4097-byte body in 1-byte chunks: JSON 413');
check_not_forwarded('4097 bytes in 1-byte chunks');
check_new_job($t->idem('framing-c',
                       body => '{"gender":"male","prompt":"after the 413"}'),
              'the key of a refused 413 then with a good body: a fresh 202 '
              . '(nothing was stored)');
check_forwarded_once('after the 413', 'the key reused after the 413');

# the unread rest of a refused body is never read as the next request
{
    my $req = $t->request($t->create_args(body => $b4097,
                                          chunked => ones($b4097),
                                          keepalive => 1));
    my $next = $t->request($t->create_args(
        body => '{"gender":"male","prompt":"pipelined"}', keepalive => 1));
    my $sock = $t->send_async($req . $next);
    my $r = finish_async($sock, 10);
    check_error($r, 413, $P, undef,
                'a 4097-byte 1-byte-chunked body with a request pipelined '
                . 'after it: JSON 413');
    ok(!$r->timed_out, 'after the 413 nginx closes the connection');
    like($r->header('connection') // '', qr/close/i,
         'the 413 says Connection: close');
    my @status = $r->raw =~ m{^HTTP/1\.1 (\d{3})}mg;
    is("@status", '413', 'one answer only: neither the rest of the body nor '
       . 'the pipelined request is read as a request');
    check_not_forwarded('the pipelined request after a 413');
}

# ------------------------------------------------------------ slow writes

# the head at once, then the body in pieces 0.3 s apart: each piece is read
# by itself, and the limit is crossed in a later read than the first
sub slowly {
    my ($body, $pieces, %o) = @_;
    my $bytes = $t->request($t->create_args(body => $body,
                                            chunked => ones($body), %o));
    my $i = index($bytes, "\r\n\r\n") + 4;
    my @p = (substr($bytes, 0, $i));
    my $rest = substr($bytes, $i);
    my $size = int(length($rest) / $pieces) + 1;
    push @p, substr($rest, 0, $size, '') while length $rest;
    return $t->raw(\@p, pause => 0.3, timeout => 15);
}

my $slow = body_of(3000, 'slow but small');
check_new_job(slowly($slow, 5),
    'a 3000-byte body in 1-byte chunks, written in 5 pieces 0.3 s apart: 202');
check_forwarded_once('slow but small', 'slow writes under the limit');

check_error(slowly(body_of(5000, 'slow and large'), 5), 413, $P, undef,
            'a 5000-byte body in 1-byte chunks, written in 5 pieces 0.3 s '
            . 'apart (the limit crossed in a later read): JSON 413');
check_not_forwarded('slow writes over the limit');

{
    my $b = body_of(6000, 'large chunks slowly');
    my $bytes = $t->request($t->create_args(body => $b, chunked => [1000] x 6));
    my $i = index($bytes, "\r\n\r\n") + 4;
    my @p = (substr($bytes, 0, $i));
    my $rest = substr($bytes, $i);
    push @p, substr($rest, 0, 1010, '') while length $rest;
    check_error($t->raw(\@p, pause => 0.3, timeout => 15), 413, $P, undef,
                'six 1000-byte chunks, one write each 0.3 s apart: JSON 413');
    check_not_forwarded('slow 1000-byte chunks over the limit');
}

# ------------------------------------------------------------ large chunks

for my $c ([[4097], 4097, 'one chunk of 4097 bytes (limit + 1)'],
           [[4096, 1], 4097, 'a chunk of 4096 bytes then one of 1'],
           [[9000], 9000, 'one chunk of 9000 bytes (past the read buffer too)'])
{
    my ($sizes, $n, $name) = @$c;
    check_error($t->create(body => body_of($n, 'large chunks'),
                           chunked => $sizes, timeout => 10),
                413, $P, undef, "$name: JSON 413");
    check_not_forwarded($name);
}

# ------------------------------------------------------------ a 1k buffer

my $sp = $t->port('small');

$spills = $t->count_log($SMALL_TEMP_RE);
my $b1000 = body_of(1000, 'small buffer');
check_new_job($t->create(port => $sp, body => $b1000, chunked => ones($b1000),
                         timeout => 10),
    'client_body_buffer_size 1k, limit 1k: 1000 bytes in 1-byte chunks: 202');
cmp_ok($t->count_log($SMALL_TEMP_RE), '>', $spills,
       'client_body_buffer_size 1k: the body went through the location\'s '
       . 'client_body_temp_path');
check_forwarded_once('small buffer', '1k buffer, 1-byte chunks');

$spills = $t->count_log($SMALL_TEMP_RE);
my $b1024 = body_of(1024, 'small buffer, large chunks');
check_new_job($t->create(port => $sp, body => $b1024, chunked => [(4) x 256],
                         timeout => 10),
    'client_body_buffer_size 1k, limit 1k: 1024 bytes in 4-byte chunks '
    . '(2.3 KB framed): 202');
cmp_ok($t->count_log($SMALL_TEMP_RE), '>', $spills,
       '1024 bytes in 4-byte chunks went through a temporary file');
check_forwarded_once('small buffer, large chunks', '1k buffer, 4-byte chunks');

$spills = $t->count_log($SMALL_TEMP_RE);
my $b1024cl = body_of(1024, 'small buffer, Content-Length');
check_new_job($t->create(port => $sp, body => $b1024cl),
    'client_body_buffer_size 1k, limit 1k: 1024 bytes with Content-Length: '
    . '202');
is($t->count_log($SMALL_TEMP_RE), $spills,
   'a body within the limit with Content-Length stays in memory');
check_forwarded_once('small buffer, Content-Length',
                     '1k buffer, Content-Length');

my $b1025 = body_of(1025, 'small buffer');
check_error($t->create(port => $sp, body => $b1025, chunked => ones($b1025),
                       timeout => 10),
            413, $P, undef,
            'client_body_buffer_size 1k, limit 1k: 1025 bytes in 1-byte '
            . 'chunks: JSON 413');
check_not_forwarded('1k buffer, 1025 bytes');

# ------------------------------------------------------------ read before

# mirror reads the body in the precontent phase, where the module's filter
# does not count it yet: the decoded length nginx keeps still decides
my $mp = $t->port('mirror');

$spills = $t->count_log($TEMP_RE);
my $bm = body_of(2000, 'mirrored');
check_new_job($t->create(port => $mp, body => $bm, chunked => ones($bm),
                         timeout => 10),
    'a 2000-byte body in 1-byte chunks read by mirror first: 202');
cmp_ok($t->count_log($TEMP_RE), '>', $spills,
       'the mirrored body was in a temporary file');
check_forwarded_once('mirrored', 'read by mirror first');

my $bm2 = body_of(5000, 'mirrored and large');
check_error($t->create(port => $mp, body => $bm2, chunked => ones($bm2),
                       timeout => 10),
            413, $P, undef,
            'a 5000-byte body in 1-byte chunks read by mirror first: JSON 413');
check_not_forwarded('read by mirror first, over the limit');

# ------------------------------------------------------------ HTTP/2 with curl

# POST over h2c (prior knowledge) with curl reading the body from a pipe
# that is fed in pieces: no content-length, one DATA frame or more a piece
my $h2n = 0;

sub curl_h2 {
    my (%o) = @_;
    my $n = ++$h2n;
    my ($head, $out, $err) = map { "$dir/h2-$n.$_" } qw(head body err);
    my @cmd = ('curl', '-sS', '--http2-prior-knowledge', '--max-time', '15',
               '-X', 'POST', '-T', '-', '-D', $head, '-o', $out,
               '-H', 'Authorization: Bearer ' . K_WRITE,
               '-H', 'Content-Type: application/json', '-H', 'Expect:',
               ($o{key} ? ('-H', "Idempotency-Key: $o{key}") : ()),
               'http://127.0.0.1:' . $t->port('h2') . '/v1/projects/'
               . P_FEMALE . '/influencers');

    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $wr;
        open STDIN, '<&', $rd;
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $err;
        { no warnings q(exec); exec @cmd; }
        POSIX::_exit(127);
    }
    close $rd;

    local $SIG{PIPE} = 'IGNORE';
    my @pieces = @{ $o{pieces} };
    for my $i (0 .. $#pieces) {
        Time::HiRes::sleep($o{pause} // 0.2) if $i;
        syswrite($wr, $pieces[$i]) // last;
    }
    close $wr;

    my $end = Time::HiRes::time() + 20;
    my $rc;
    while (Time::HiRes::time() < $end) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $rc = $? >> 8; last; }
        Time::HiRes::sleep(0.05);
    }
    unless (defined $rc) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }

    # curl writes "HTTP/2 202"; the harness parses HTTP/x.y
    my $h = $t->read_file($head) // '';
    $h =~ s{^HTTP/2 }{HTTP/2.0 }mg;
    my $r = InfTest::Response->parse($h . ($t->read_file($out) // ''));
    diag "curl exit $rc: " . ($t->read_file($err) // '') if $rc;
    return $r;
}

# what nginx saw of the h2 requests since $from: DATA frames with a
# payload, and whether a content-length header came
sub h2_seen {
    my ($from) = @_;
    my $log = substr($t->error_log, $from);
    my @data = $log =~ /http2 frame type:0 f:[0-9a-f]+ l:([1-9]\d*) sid:/g;
    my $cl = $log =~ /http2 header: "content-length: /;
    return (scalar @data, $cl);
}

sub pieces_of {
    my ($body, $k) = @_;
    my $size = int(length($body) / $k) + 1;
    my @p;
    push @p, substr($body, 0, $size, '') while length $body;
    return \@p;
}

my ($curl_v) = `curl -V 2>/dev/null`;
SKIP: {
    ok(defined $curl_v, 'curl is installed (the HTTP/2 checks with a real '
                        . 'client need it)')
        or skip 'no curl', 1;
    skip "curl without the HTTP2 feature: $curl_v", 1
        unless join('', `curl -V 2>/dev/null`) =~ /^Features:.*\bHTTP2\b/m;

    my $from = length $t->error_log;
    my $b = body_of(2000, 'curl over h2 in pieces');
    check_new_job(curl_h2(pieces => pieces_of($b, 5), key => 'framing-h2'),
                  'HTTP/2 (curl), 2000 bytes in 5 writes 0.2 s apart, no '
                  . 'content-length: 202');
    my ($frames, $cl) = h2_seen($from);
    cmp_ok($frames, '>=', 2, 'HTTP/2 (curl): the body came in several DATA '
                             . 'frames');
    ok(!$cl, 'HTTP/2 (curl): no content-length was sent');
    check_forwarded_once('curl over h2 in pieces',
                         'HTTP/2 (curl) under the limit');

    my $b4096 = body_of(4096, 'curl h2 at the limit');
    check_new_job(curl_h2(pieces => pieces_of($b4096, 3)),
                  'HTTP/2 (curl), 4096 bytes (the limit) in 3 writes: 202');
    check_forwarded_once('curl h2 at the limit', 'HTTP/2 (curl) at the limit');

    # no 413 with curl: it comes before curl has ended its upload (see
    # below), and curl 7.88 loses such an answer
}

# ------------------------------------------------------------ HTTP/2 frames

# curl 7.88 drops an HTTP/2 answer that comes before its upload ends (it
# fails with "Stream error in the HTTP/2 framing layer" on the RST_STREAM
# NO_ERROR after it, where RFC 9113 section 8.1 says to keep the answer).
# This small h2c client sends exactly the DATA frames it is given, pauses
# between them, stops sending once the answer is in, and decodes the
# answer's headers (HPACK, with nginx's Huffman-coded values).

# h2_post(data => [payloads], pause => s, headers => [more pairs]):
# POST on stream 1 without content-length, END_STREAM on the last DATA
# frame.  Returns the answer as an InfTest::Response, with {rst} (the
# RST_STREAM code, if one came) and {sent} (DATA frames sent).
sub h2_post {
    my (%o) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('h2'), Proto => 'tcp', Timeout => 5)
        or return InfTest::Response->failed("connect: $!");
    binmode $sock;
    local $SIG{PIPE} = 'IGNORE';

    my @hdr = (':method' => 'POST', ':scheme' => 'http',
               ':path' => '/v1/projects/' . P_FEMALE . '/influencers',
               ':authority' => 'localhost',
               'authorization' => 'Bearer ' . K_WRITE,
               'content-type' => 'application/json',
               @{ $o{headers} || [] });
    my $block = '';
    $block .= hpack_literal(splice @hdr, 0, 2) while @hdr;

    my @data = @{ $o{data} };
    my $st = { headers => [], body => '', hblock => '', ended => 0 };
    my ($in, $sent) = ('', 0);
    my @dyn;

    my $put = sub { return H2::put_all($sock, $_[0]) };

    # reads what is there (or waits up to $wait s), handles whole frames
    my $read = sub {
        my ($wait) = @_;
        my $sel = IO::Select->new($sock);
        return 0 unless $sel->can_read($wait);
        my $n = sysread($sock, $in, 65536, length $in);
        return -1 unless $n;
        for my $f (H2::take_frames(\$in)) {
            my ($type, $flags, $sid, $p) = @$f;
            if ($type == 4 && !($flags & 1)) {
                $put->(h2_frame(4, 1, 0, ''));
            } elsif ($type == 6 && !($flags & 1)) {
                $put->(h2_frame(6, 1, 0, $p));
            } elsif ($type == 7) {
                $st->{ended} = 1;
            } elsif ($sid == 1) {
                H2::stream_frame($st, $type, $flags, $p, \@dyn);
            }
        }
        return 1;
    };

    $put->("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . h2_frame(4, 0, 0, '')
           . h2_frame(1, 4 | (@data ? 0 : 1), 1, $block));

    for my $i (0 .. $#data) {
        if ($i && $o{pause}) {
            H2::read_until($read, $st, Time::HiRes::time() + $o{pause});
        } else {
            $read->(0);
        }
        last if $st->{ended};    # an answer before the body ended: stop sending
        $put->(h2_frame(0, $i == $#data ? 1 : 0, 1, $data[$i])) or last;
        $sent++;
    }

    my $end = Time::HiRes::time() + 10;
    H2::read_until($read, $st, $end);
    # a RST_STREAM after a complete answer
    $read->(0.2) if $st->{ended} && !defined $st->{rst};
    close $sock;

    my ($raw) = H2::answer_text($st->{headers}, $st->{body}, '(undecodable)');
    my $r = InfTest::Response->parse($raw);
    $r->{rst} = $st->{rst};
    $r->{sent} = $sent;
    return $r;
}

{
    my $b = body_of(2000, 'h2 one byte a frame');
    my $r = h2_post(data => [split //, $b]);
    check_new_job($r, 'HTTP/2, 2000 bytes in 1-byte DATA frames, no '
                      . 'content-length: 202');
    is($r->{sent}, 2000, 'HTTP/2: all 2000 DATA frames were sent');
    check_forwarded_once('h2 one byte a frame', 'HTTP/2 in 1-byte DATA frames');

    $b = body_of(4096, 'h2 at the limit');
    check_new_job(h2_post(data => [split //, $b]),
                  'HTTP/2, 4096 bytes (the limit) in 1-byte DATA frames: 202');
    check_forwarded_once('h2 at the limit',
                         'HTTP/2 at the limit, 1-byte frames');

    $b = body_of(4097, 'h2 over the limit');
    $r = h2_post(data => [split //, $b]);
    check_error($r, 413, $P, undef,
                'HTTP/2, 4097 bytes in 1-byte DATA frames: JSON 413');
    check_not_forwarded('HTTP/2, 4097 bytes in 1-byte frames');

    # the limit crossed by the fifth frame, 1.2 s after the first: nginx
    # answers while the stream is open, then resets it with NO_ERROR
    $r = h2_post(data => pieces_of(body_of(6000, 'h2 slowly over'), 6),
                 pause => 0.3);
    check_error($r, 413, $P, undef,
                'HTTP/2, 6000 bytes in 6 DATA frames 0.3 s apart (the limit '
                . 'crossed in a later frame): JSON 413');
    is($r->{sent}, 5, 'HTTP/2: the answer came once the fifth frame crossed '
                      . 'the limit');
    is($r->{rst}, 0, 'HTTP/2: then RST_STREAM NO_ERROR (the answer stands)');
    check_not_forwarded('HTTP/2, slowly over the limit');

    $r = h2_post(data => pieces_of(body_of(3000, 'h2 slowly under'), 6),
                 pause => 0.3,
                 headers => ['idempotency-key' => 'framing-h2-slow']);
    check_new_job($r, 'HTTP/2, 3000 bytes in 6 DATA frames 0.3 s apart: 202');
    check_forwarded_once('h2 slowly under', 'HTTP/2, slowly under the limit');
    check_replay(h2_post(data => [split //, body_of(3000, 'h2 slowly under')],
                         headers => ['idempotency-key' => 'framing-h2-slow']),
                 $r, 'HTTP/2: the same body in 1-byte frames and key: '
                 . 'replayed');
    check_not_forwarded('HTTP/2 replay');
}

# ------------------------------------------------------------ totals and log

is(forwards_now(), $forwarded, 'the backend received the accepted jobs only');

my @crit = $t->log_lines(qr/\[crit\]/);
is(scalar @crit, 0, 'error.log has no [crit] lines') or diag join "\n", @crit;
$t->check_log_clean;

done_testing;
