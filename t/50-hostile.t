#!/usr/bin/perl

# Issue 8, part 2: a catalogue of hostile requests over HTTP/1.x.  Each one
# is answered with one JSON error (never a 500, never HTML) or, where nginx
# itself drops the connection (a body or a header that never finishes), with
# no answer at all; and after each group nginx is still
# up (the same master and workers, no worker exited on a signal), nothing
# was forwarded, nothing was stored (the zone's counters unchanged), and
# error.log has no [alert], [crit] or Sanitizer line.
#
# The answer to each case follows the contract: the check order (method,
# authentication, scope, projectId, project, Idempotency-Key, body size,
# content type, body), 422 VALIDATION with formErrors for bytes that are not
# JSON, fieldErrors["Idempotency-Key"] for a bad key, 413 as JSON, and the
# influencers_errors handler's JSON for what nginx refuses before the module
# runs (the error_page below).  t/51-hostile-h2.t runs the core of the
# catalogue over HTTP/2 with TLS.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use Hostile qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

# The main server: the default body limit (4k), small client timeouts, the
# README's error_page plus 501 and 505 (see the HTTP versions below).
# "big": influencers_body_limit 64k, so that 10,000-deep nesting reaches
# the parser, and client_max_body_size 2m, so that a 1 MB body reaches the
# module.
my $ERRPAGE = '400 404 405 408 413 414 494 500 501 502 503 504 505';
my $t = InfTest->setup(
    error_page => $ERRPAGE,
    server => "client_body_timeout 1s;\n        client_header_timeout 1s;\n"
            . '        ' . STATS_LOCATION,
    http => endpoint_server(port => 'BIG', error_page => $ERRPAGE,
        top => "client_body_timeout 1s;\n        client_header_timeout 1s;\n"
             . "        client_body_buffer_size 64k;\n"
             . '        client_max_body_size 2m;',
        location => 'influencers_body_limit 64k;'));

my $BIG  = $t->port('big');
my $ID   = P_FEMALE;
my $PATH = "/v1/projects/$ID/influencers";
my $AUTH = 'Authorization: Bearer ' . K_WRITE;
my $JSON = 'Content-Type: application/json';

# ------------------------------------------------------------ the invariants

Hostile::start($t, send => sub {
    my ($body, %o) = @_;
    return $t->create(body => $body, %o);
});
my $FORWARDS = Hostile::forwards();
my %STORED   = %{ Hostile::stored() };

cmp_ok(scalar(my @w = Hostile::workers()), '>=', 2, 'a master and two workers');
ok(exists $STORED{claims} && exists $STORED{entries},
   'the zone\'s counters are readable') or diag explain \%STORED;

# ------------------------------------------------------------ helpers

# the bytes of a request: POST $PATH HTTP/1.1 unless given, Host and
# Connection: close first, then the header lines given, then the body
sub req {
    my (%o) = @_;
    my $line = $o{line} // "POST " . ($o{path} // $PATH) . ' ' . ($o{version} // 'HTTP/1.1');
    my $h = "$line\r\n";
    $h .= "Host: localhost\r\n" unless $o{no_host};
    $h .= "Connection: close\r\n" unless $o{keepalive};
    $h .= "$_\r\n" for @{ $o{headers} || [] };
    return "$h\r\n" . ($o{body} // '');
}

# a chunked request with the usual headers, the chunked part as given
sub chunked {
    my ($payload, @h) = @_;
    return req(headers => [$AUTH, $JSON, 'Transfer-Encoding: chunked', @h],
               body => $payload);
}

# answers split from the bytes of one connection (each with Content-Length)
sub answers {
    my ($raw) = @_;
    my @r;
    while (length $raw) {
        my $i = index($raw, "\r\n\r\n");
        last if $i < 0;
        my $head = substr($raw, 0, $i + 4);
        my ($cl) = $head =~ /^content-length:\s*(\d+)/im;
        $cl //= length($raw) - $i - 4;
        push @r, InfTest::Response->parse(substr($raw, 0, $i + 4 + $cl, ''));
    }
    return @r;
}

# the connection closed by nginx without any answer, within $max seconds
sub closed_case {
    my ($name, $bytes, $max, %o) = @_;
    counted(1, 'closed');
    my $t0 = Time::HiRes::time();
    my $r = $t->raw($bytes, timeout => $max + 3, %o);
    my $took = Time::HiRes::time() - $t0;
    subtest "$name: the connection is closed without an answer" => sub {
        ok(!$r->timed_out, 'nginx closed the connection');
        cmp_ok($took, '<', $max + 1, "within about $max s");
        is($r->raw, '', 'no bytes at all (no HTML, no half answer)')
            or diag(printable($r->raw));
    };
}

# ============================================================ NUL bytes

note('NUL bytes in every header: nginx refuses the header line (400)');
for my $h ([Authorization => "Bearer \0" . K_WRITE],
           [Authorization => 'Bearer ' . K_WRITE . "\0"],
           ['Idempotency-Key' => "abc\0def"],
           ['Idempotency-Key' => "\0"],
           ['Content-Type' => "application/json\0"],
           ['Content-Type' => "application/\0json"],
           [Host => "local\0host"],
           [Expect => "100-continue\0"],
           ['X-Request-Id' => "req_\0"],
           ['User-Agent' => "agent\0"],
           ['Content-Length' => "2\0"],
           ['Transfer-Encoding' => "chunked\0"],
           ["X-\0Name" => 'value'])
{
    my ($name, $value) = @$h;
    my @hd = ($AUTH, $JSON, 'Content-Length: 2');
    @hd = grep { !/^\Q$name\E:/i } @hd;
    my $bytes = req(no_host => $name eq 'Host',
                    headers => ["$name: $value", @hd], body => '{}');
    case('NUL in ' . printable("$name: $value"), $t->raw($bytes), 400,
         'BAD_REQUEST');
}

note('NUL bytes in the body: not JSON');
body_case('a raw NUL inside a string', qq({"prompt":"a\0b"}), form($BADJSON));
body_case('a raw NUL in gender', qq({"gender":"male\0"}), form($BADJSON));
body_case('a raw NUL in a key', qq({"\0":1}), form($BADJSON));
body_case('a raw NUL between tokens', qq({\0"prompt":"x"}), form($BADJSON));
body_case('NUL bytes after the object', qq({"prompt":"x"}\0\0\0), form($BADJSON));
body_case('a body of one NUL', "\0", form($BADJSON));
# "\u0000" is JSON, but no partner's prompt holds a NUL and a C backend
# would cut the string there: refused (jansson without JSON_ALLOW_NUL)
body_case('\u0000 in prompt', '{"prompt":"\u0000"}', form($BADJSON));
body_case('\u0000 inside prompt', '{"prompt":"a\u0000b"}', form($BADJSON));
body_case('\u0000 after an enum value', '{"gender":"male\u0000"}', form($BADJSON));
body_case('\u0000 in a key', '{"gender\u0000":"male"}', form($BADJSON));

note('NUL in the request line: 400');
case('%00 in the project id',
     $t->raw(req(path => "/v1/projects/$ID%00/influencers",
                 headers => [$AUTH, 'Content-Length: 0'])), 400, 'BAD_REQUEST');
case('%00 at the end of the path',
     $t->raw(req(path => "$PATH%00", headers => [$AUTH, 'Content-Length: 0'])),
     400, 'BAD_REQUEST');
case('a raw NUL in the path',
     $t->raw(req(path => "/v1/projects/$ID\0/influencers",
                 headers => [$AUTH, 'Content-Length: 0'])), 400, 'BAD_REQUEST');
case('a raw NUL in the method',
     $t->raw(req(line => "PO\0ST $PATH HTTP/1.1", headers => [$AUTH])),
     400, 'BAD_REQUEST');
case('a raw NUL in the version',
     $t->raw(req(line => "POST $PATH HTTP/1.1\0", headers => [$AUTH])),
     400, 'BAD_REQUEST');

invariants('NUL bytes');

# ============================================================ invalid UTF-8

my @UTF8 = (
    ['0xFF'                  => "\xff"],
    ['0xFE'                  => "\xfe"],
    ['a lone continuation'   => "\x80"],
    ['overlong "/" (C0 AF)'  => "\xc0\xaf"],
    ['overlong C1 BF'        => "\xc1\xbf"],
    ['overlong 3 bytes'      => "\xe0\x80\xaf"],
    ['overlong 4 bytes'      => "\xf0\x80\x80\xaf"],
    ['a 5-byte form'         => "\xf8\x88\x80\x80\x80"],
    ['a 6-byte form'         => "\xfc\x84\x80\x80\x80\x80"],
    ['an encoded surrogate'  => "\xed\xa0\x80"],
    ['beyond U+10FFFF'       => "\xf4\x90\x80\x80"],
    ['a truncated sequence'  => "\xe2\x82"],
);

note('invalid or overlong UTF-8 in every body field: formErrors');
for my $u (@UTF8) {
    my ($what, $bytes) = @$u;
    body_case("$what in prompt", qq({"prompt":"x$bytes"}), form($BADUTF8));
}
for my $u (@UTF8[0, 3, 9]) {
    my ($what, $bytes) = @$u;
    body_case("$what in gender", qq({"gender":"male$bytes"}), form($BADUTF8));
    body_case("$what in ageRange", qq({"ageRange":"$bytes"}), form($BADUTF8));
    body_case("$what in a key", qq({"gen${bytes}der":"male"}), form($BADUTF8));
    body_case("$what under an unknown key", qq({"x":["$bytes"]}), form($BADUTF8));
}
body_case('overlong "/" as the name key', qq({"name\xc0\xaf":"Ava"}), form($BADUTF8));
# the whole body is checked as UTF-8 first
body_case('0xFF outside any string', qq({"prompt":"x"\xff}), form($BADUTF8));
body_case('a truncated sequence at the end of the body', qq({"prompt":"x"}\xe2\x82),
          form($BADUTF8));
body_case('invalid UTF-8 split over 1-byte chunks', qq({"prompt":"a\xc3\x28"}),
          form($BADUTF8), chunked => 1);

note('invalid or overlong UTF-8 in every header');
case('0xFF in the API key',
     $t->create(auth => "Bearer sk_\xff\xfe"), 401, 'UNAUTHENTICATED');
case('an overlong sequence as the API key',
     $t->create(auth => "Bearer \xc0\xaf"), 401, 'UNAUTHENTICATED');
case('a valid key followed by an encoded surrogate',
     $t->create(auth => 'Bearer ' . K_WRITE . "\xed\xa0\x80"), 401, 'UNAUTHENTICATED');
case('UTF-8 in the scheme',
     $t->create(auth => "B\xc3\xa9arer " . K_WRITE), 401, 'UNAUTHENTICATED');
for my $u (@UTF8[0, 3, 7, 9]) {
    my ($what, $bytes) = @$u;
    case("$what in Idempotency-Key",
         $t->idem("key$bytes"), 422, 'VALIDATION', message => $IDEM_MSG,
         details => { fieldErrors => $IDEM_BAD });
}
case('0xFF in Content-Type',
     $t->create(ctype => "application/json\xff", body => '{}'), 415,
     'UNSUPPORTED_MEDIA_TYPE');
case('an overlong sequence in the charset',
     $t->create(ctype => "application/json; charset=utf-8\xc0\xaf", body => '{}'),
     415, 'UNSUPPORTED_MEDIA_TYPE');
# headers the module does not read: the answer is the body's.  But a Host
# that is not UTF-8 nginx itself refuses since 1.29.4 (its CHANGES: host
# validation follows RFC 3986): nginx's 400, through error_page, as JSON.
for my $h (['X-Request-Id' => "req_\xff\xfe"], ['User-Agent' => "\xc0\xaf\xed\xa0\x80"],
           [Expect => "\xff"], [Host => "\xf8\x88\x80\x80\x80"],
           ["X-\xff" => 'v'])
{
    my ($name, $value) = @$h;
    my $r = $t->raw(req(no_host => $name eq 'Host',
                        headers => ["$name: $value", $AUTH, $JSON,
                                    'Content-Length: 14'],
                        body => '{"name":"Ava"}'));
    refused_or_body($r, $name eq 'Host' && nginx_at_least('1.29.4'),
        'invalid UTF-8 in Host (refused since nginx 1.29.4): nginx\'s 400, as JSON',
        'invalid UTF-8 in ' . printable($name) . ' (not read): the body\'s 422');
    unlike($r->raw, qr/\xff|\xc0\xaf/, 'the bytes are not echoed');
}
case('0xFF in Content-Length',
     $t->raw(req(headers => [$AUTH, $JSON, "Content-Length: 2\xff"], body => '{}')),
     400, 'BAD_REQUEST');
case('0xFF in Transfer-Encoding',
     $t->raw(req(headers => [$AUTH, $JSON, "Transfer-Encoding: chunked\xff"],
                 body => "0\r\n\r\n")),
     501, 'NOT_IMPLEMENTED');

note('invalid UTF-8 in the path');
for my $p ("\xff", '%ff', "$ID\xc0\xaf", "$ID%c0%af", '%ed%a0%80', "\xf8\x88\x80\x80\x80") {
    case('projectId ' . printable($p),
         $t->create(path => "/v1/projects/$p/influencers"), 422, 'VALIDATION',
         message => 'Invalid path parameter.',
         details => field(projectId => 'Invalid uuid'));
}

invariants('invalid UTF-8');

# ============================================================ lone surrogates

note('lone surrogates as escapes: formErrors');
for my $e ('\ud800', '\udbff', '\udc00', '\udfff', '\ud800\ud800',
           '\udc00\ud800', '\ud800\u0041', '\ud800x', 'abc\ud800',
           '\uD83D', '\ud83d\\\\ude00')
{
    body_case("prompt \"$e\"", qq({"prompt":"$e"}), form($BADESC));
}
body_case('a lone surrogate in gender', '{"gender":"\ud800"}', form($BADESC));
body_case('a lone surrogate in ageRange', '{"ageRange":"teen\udfff"}', form($BADESC));
body_case('a lone surrogate as a key', '{"\udc00":"x"}', form($BADESC));
body_case('a lone surrogate in the name key', '{"name\ud800":"Ava"}', form($BADESC));
body_case('a lone surrogate deep under an unknown key', '{"x":{"y":["\udbff"]}}',
          form($BADESC));
body_case('a lone surrogate at top level', '"\ud800"', form($BADESC));
for my $e ('\ud8', '\u12G4', '\U0041', '\u', '\x41') {
    body_case("a broken escape \"$e\"", qq({"prompt":"$e"}), form($BADJSON));
}

invariants('lone surrogates');

# ============================================================ deep nesting

note('10,000-deep nesting (server "big": a 64k limit)');
for my $d (['10,000 arrays, closed',   ('[' x 10000) . (']' x 10000)],
           ['10,000 arrays, unclosed', '[' x 10000],
           ['10,000 objects as prompt',
            '{"prompt":' . ('{"a":' x 10000) . '1' . ('}' x 10000) . '}'],
           ['10,000 arrays under an unknown key',
            '{"x":' . ('[' x 10000) . (']' x 10000) . '}'],
           ['10,000 mixed levels, unclosed', '{"a":' . ('[{"a":' x 5000)],
           ['10,000 levels then invalid UTF-8',
            '{"x":' . ('[' x 10000) . "\"\xff\"" . (']' x 10000) . '}'])
{
    my ($what, $body) = @$d;
    # jansson stops at 2048 levels, before the end of the body: the depth
    # is the one problem reported, whatever follows
    body_case("$what: \"$DEEP\"", $body, form($DEEP), port => $BIG,
              timeout => 10);
}
case('100,000 levels: over the 64k limit',
     $t->create(body => '[' x 100000, port => $BIG, timeout => 10), 413,
     'PAYLOAD_TOO_LARGE');
case('10,000 levels on the default server: over its 4k limit',
     $t->create(body => ('[' x 10000) . (']' x 10000)), 413, 'PAYLOAD_TOO_LARGE');
case('10,000 levels in 1-byte chunks: 413 while reading',
     $t->create(body => '[' x 10000, chunked => [(1) x 10000], timeout => 20),
     413, 'PAYLOAD_TOO_LARGE');

invariants('deep nesting');

# ============================================================ numbers

note('huge and odd numbers');
for my $n ('1e999999999', '-1e-999999999', '1E400', '0e99999', '-0',
           '-0.0e-0', ('9' x 400), '-' . ('1' x 400),
           '0.' . ('0' x 400) . '1', '1' . ('0' x 3900))
{
    body_case('a number of ' . length($n) . " characters ("
              . substr($n, 0, 12) . ') as prompt', qq({"prompt":$n}),
              field(prompt => $NUMBER));
}
body_case('a huge number as gender and ageRange',
          '{"gender":1e999,"ageRange":-1e999}',
          { fieldErrors => { gender => [$NUMBER], ageRange => [$NUMBER] } });
body_case('a huge number under name', '{"name":1e999}', field(name => $NAME));
body_case('a huge number at top level', '1e999999', form('Expected object, received number'));
for my $n ('NaN', 'Infinity', '-Infinity', '+1', '01', '00', '1.', '.5', '1e',
           '1e+', '-', '--1', '0x10', '1_000', '1.2.3', "\xd9\xa3", '1e5.5',
           '0b1', '1,5')
{
    body_case('an invalid number ' . printable($n), qq({"prompt":$n}),
              form($BADJSON));
}

invariants('numbers');

# ============================================================ 1 MB bodies

note('1 MB bodies');
my $MB = 1024 * 1024;
my $big_prompt = '{"prompt":"' . ('x' x ($MB - 13)) . '"}';
case('1 MB + 1 with Content-Length (over client_max_body_size): nginx\'s 413',
     $t->create(body => $big_prompt . ' ', timeout => 10), 413, 'PAYLOAD_TOO_LARGE');
case('exactly 1 MB with Content-Length: the module\'s 413',
     $t->create(body => $big_prompt, timeout => 10), 413, 'PAYLOAD_TOO_LARGE');
case('1 MB chunked in 64k chunks: 413 while reading',
     $t->create(body => $big_prompt, chunked => [(65536) x 16], timeout => 10),
     413, 'PAYLOAD_TOO_LARGE');
case('1 MB chunked without a Content-Type: 413 (size before type)',
     $t->create(body => $big_prompt, ctype => undef, chunked => [(65536) x 16],
                timeout => 10), 413, 'PAYLOAD_TOO_LARGE');
case('1 MB of invalid UTF-8 with Content-Length',
     $t->create(body => "\xff" x $MB, timeout => 10), 413, 'PAYLOAD_TOO_LARGE');
case('1 MB of NUL bytes as text/plain',
     $t->create(body => "\0" x $MB, ctype => 'text/plain', timeout => 10), 413,
     'PAYLOAD_TOO_LARGE');
case('1 MB with an unknown key: 401 first (the body is discarded)',
     $t->create(body => $big_prompt, key => K_UNKNOWN, timeout => 10), 401,
     'UNAUTHENTICATED');
case('1 MB to server "big" (past client_max_body_size, over its 64k limit)',
     $t->create(body => $big_prompt, port => $BIG, timeout => 10), 413,
     'PAYLOAD_TOO_LARGE');
case('1 MB declared, nothing sent: 413 at once',
     $t->raw(req(headers => [$AUTH, $JSON, "Content-Length: $MB"])), 413,
     'PAYLOAD_TOO_LARGE');

invariants('1 MB bodies');

# ============================================================ Idempotency-Key

note('CR, LF and control characters in Idempotency-Key');
for my $c ("\x01", "\x07", "\x08", "\t", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f",
           ' ', "\x80", "\xc3\xa9")
{
    case('Idempotency-Key ' . printable("ab${c}cd"), $t->idem("ab${c}cd"), 422,
         'VALIDATION', message => $IDEM_MSG, details => { fieldErrors => $IDEM_BAD });
}
for my $v ('"abc', '"a"b', "\"a\x01\"", '""', '"\q"', '"a\\', '"a\"',
           'a' x 256, '"' . ('a' x 256) . '"', 'x' x 4000)
{
    case('Idempotency-Key ' . printable($v), $t->idem($v), 422, 'VALIDATION',
         message => $IDEM_MSG, details => { fieldErrors => $IDEM_BAD });
}
case('Idempotency-Key of 9000 characters (over large_client_header_buffers)',
     $t->idem('k' x 9000), 400, 'BAD_REQUEST');
case('Idempotency-Key with a CR inside',
     $t->raw(req(headers => [$AUTH, "Idempotency-Key: ab\rcd", 'Content-Length: 0'])),
     400, 'BAD_REQUEST');
# nginx takes a bare LF for the end of a line (RFC 9112 allows it) and a
# line without a colon for a header with an empty value: the key is "ab"
# and "cd" another header; what decides is then the rest of the request
case('Idempotency-Key with a bare LF inside: the key is what precedes it',
     $t->raw(req(headers => [$AUTH, $JSON, "Idempotency-Key: ab\ncd",
                             'Content-Length: 14'], body => '{"name":"Ava"}')),
     422, 'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));
case('Idempotency-Key with a bare LF, then a bad line',
     $t->raw(req(headers => [$AUTH, "Idempotency-Key: ab\nc d: x",
                             'Content-Length: 0'])),
     400, 'BAD_REQUEST');
case('Idempotency-Key with CRLF and a folded line',
     $t->raw(req(headers => [$AUTH, "Idempotency-Key: ab\r\n cd", 'Content-Length: 0'])),
     400, 'BAD_REQUEST');
case('Idempotency-Key with a bare LF that smuggles a second Idempotency-Key',
     $t->raw(req(headers => [$AUTH, "Idempotency-Key: k1\nIdempotency-Key: k2",
                             'Content-Length: 0'])),
     422, 'VALIDATION', message => $IDEM_MSG, details => { fieldErrors => $IDEM_TWICE });
case('Idempotency-Key with a bare LF that smuggles a second Authorization',
     $t->raw(req(headers => [$AUTH, "Idempotency-Key: k1\nAuthorization: Bearer "
                             . K_GLOBEX, 'Content-Length: 0'])),
     400, 'BAD_REQUEST');

# 1001 header lines: nginx counts them since 1.29.8 (max_headers, 1000 by
# default; Debian 12's 1.22.1 too, backported in 1.22.1-9+deb12u8, while
# 1.24.0 to 1.28.3 have none) and answers 494, which error_page (without
# "=") turns into a 400, like a header over large_client_header_buffers:
# BAD_REQUEST, as JSON.  Without max_headers they are read like any
# others and the body decides.
max_headers_case($t->raw(req(headers => [$AUTH, $JSON, 'Content-Length: 14',
                                         map { "X-Pad-$_: p" } 1 .. 1001],
                             body => '{"name":"Ava"}')));

note('two Authorization or two Idempotency-Key headers');
case('Authorization twice, the same key',
     $t->raw(req(headers => [$AUTH, $AUTH, 'Content-Length: 0'])), 400, 'BAD_REQUEST');
case('Authorization twice, keys of two orgs',
     $t->raw(req(headers => [$AUTH, 'Authorization: Bearer ' . K_GLOBEX,
                             'Content-Length: 0'])), 400, 'BAD_REQUEST');
case('Authorization twice, the second one lowercase and garbage',
     $t->raw(req(headers => [$AUTH, 'authorization: Basic Zm9vOmJhcg==',
                             'Content-Length: 0'])), 400, 'BAD_REQUEST');
case('Authorization twice, the first one empty',
     $t->raw(req(headers => ['Authorization:', $AUTH, 'Content-Length: 0'])),
     400, 'BAD_REQUEST');
for my $pair (['k1', 'k1'], ['k1', 'k2'], ['k1', ''], ['k1', "\x01"]) {
    case('Idempotency-Key twice: ' . printable(join(' / ', @$pair)),
         $t->idem($pair->[0], headers => ['Idempotency-Key' => $pair->[1]]),
         422, 'VALIDATION', message => $IDEM_MSG,
         details => { fieldErrors => $IDEM_TWICE });
}
case('Idempotency-Key and idempotency-key',
     $t->raw(req(headers => [$AUTH, 'Idempotency-Key: k1', 'idempotency-key: k1',
                             'Content-Length: 0'])),
     422, 'VALIDATION', message => $IDEM_MSG, details => { fieldErrors => $IDEM_TWICE });
case('Idempotency_Key (underscore, ignored) and a bad Idempotency-Key',
     $t->raw(req(headers => [$AUTH, 'Idempotency_Key: k1', 'Idempotency-Key: "',
                             'Content-Length: 0'])),
     422, 'VALIDATION', message => $IDEM_MSG, details => { fieldErrors => $IDEM_BAD });

invariants('Idempotency-Key and duplicated headers');

# ============================================================ chunked bodies

note('chunked bodies: bad sizes');
for my $c (['a size that is not hex', "zz\r\n{}\r\n0\r\n\r\n"],
           ['a negative size', "-2\r\n{}\r\n0\r\n\r\n"],
           ['a size that overflows', "ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"],
           ['a 0x prefix', "0x2\r\n{}\r\n0\r\n\r\n"],
           ['a + sign', "+2\r\n{}\r\n0\r\n\r\n"],
           ['a space before the size', " 2\r\n{}\r\n0\r\n\r\n"],
           ['an empty size line', "\r\n{}\r\n0\r\n\r\n"],
           ['a size smaller than the data', "1\r\n{}\r\n0\r\n\r\n"],
           ['a size larger than the data', "5\r\n{}\r\n0\r\n\r\n"],
           ['no CRLF after the data', "2\r\n{}0\r\n\r\n"],
           ['a NUL in the size', "2\0\r\n{}\r\n0\r\n\r\n"])
{
    my ($what, $payload) = @$c;
    case("chunked: $what", $t->raw(chunked($payload)), 400, 'BAD_REQUEST');
}
case('chunked: a declared chunk of 1 MB (the limit is crossed while reading)',
     $t->raw(chunked("100000\r\n" . ('x' x 5000))), 413, 'PAYLOAD_TOO_LARGE');

note('chunked bodies: extensions and trailers (the body is read right: its 422)');
for my $c (['an extension', "e;foo=bar\r\n{\"name\":\"Ava\"}\r\n0\r\n\r\n"],
           ['an empty extension', "e;\r\n{\"name\":\"Ava\"}\r\n0\r\n\r\n"],
           ['a quoted extension', "e;a=\"b;c\"\r\n{\"name\":\"Ava\"}\r\n0\r\n\r\n"],
           ['an extension of 3000 bytes',
            'e;x=' . ('y' x 3000) . "\r\n{\"name\":\"Ava\"}\r\n0\r\n\r\n"],
           ['extensions on every chunk and the last one',
            "7;a\r\n{\"name\"\r\n7;b=c\r\n:\"Ava\"}\r\n0;d\r\n\r\n"],
           ['a trailer Authorization (ignored)',
            "e\r\n{\"name\":\"Ava\"}\r\n0\r\nAuthorization: Bearer " . K_GLOBEX
            . "\r\n\r\n"],
           ['a trailer Content-Length: 0',
            "e\r\n{\"name\":\"Ava\"}\r\n0\r\nContent-Length: 0\r\n\r\n"],
           ['trailers Idempotency-Key and Transfer-Encoding',
            "e\r\n{\"name\":\"Ava\"}\r\n0\r\nIdempotency-Key: x\r\n"
            . "Transfer-Encoding: gzip\r\n\r\n"],
           ['1-byte chunks',
            join('', map { "1\r\n$_\r\n" } split //, '{"name":"Ava"}') . "0\r\n\r\n"],
           ['1-byte chunks with extensions',
            join('', map { "1;i\r\n$_\r\n" } split //, '{"name":"Ava"}') . "0\r\n\r\n"],
           ['zero-padded sizes', "0000000e\r\n{\"name\":\"Ava\"}\r\n00\r\n\r\n"],
           ['an uppercase hex size', "E\r\n{\"name\":\"Ava\"}\r\n0\r\n\r\n"])
{
    my ($what, $payload) = @$c;
    case("chunked: $what", $t->raw(chunked($payload)), 422, 'VALIDATION',
         message => 'Invalid body.', details => field(name => $NAME));
}
# A bare LF ending a chunk's lines: nginx took it until 1.29.4 (then the
# body decides); since 1.29.4 it is an error (nginx's CHANGES): nginx's
# 400, as JSON.
for my $c (['a bare LF after each size and chunk', "e\n{\"name\":\"Ava\"}\n0\n\n"],
           ['a bare LF after the data only', "e\r\n{\"name\":\"Ava\"}\n0\r\n\r\n"])
{
    my ($what, $payload) = @$c;
    refused_or_body($t->raw(chunked($payload)), nginx_at_least('1.29.4'),
        "chunked: $what (an error since nginx 1.29.4): nginx's 400, as JSON",
        "chunked: $what (taken before nginx 1.29.4): the body's 422");
}
case('chunked: 5000 bytes in 1-byte chunks: 413',
     $t->create(body => '{"prompt":"' . ('p' x 4990) . '"}',
                chunked => [(1) x 5002], timeout => 20), 413, 'PAYLOAD_TOO_LARGE');
case('chunked: 1-byte chunks without a Content-Type: 415',
     $t->create(body => '{}', ctype => undef, chunked => [1, 1]), 415,
     'UNSUPPORTED_MEDIA_TYPE');
# nginx skips trailers without parsing them: whatever they hold, the
# body decides
case('chunked: a trailer line without a colon (skipped)',
     $t->raw(chunked("e\r\n{\"name\":\"Ava\"}\r\n0\r\nbroken trailer\r\n\0\xff\r\n\r\n")),
     422, 'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));
case('Transfer-Encoding and Content-Length together',
     $t->raw(req(headers => [$AUTH, $JSON, 'Content-Length: 5',
                             'Transfer-Encoding: chunked'],
                 body => "2\r\n{}\r\n0\r\n\r\n")), 400, 'BAD_REQUEST');
for my $te ('gzip, chunked', 'chunked, chunked', 'identity', 'chunked;q=1') {
    case("Transfer-Encoding: $te",
         $t->raw(req(headers => [$AUTH, $JSON, "Transfer-Encoding: $te"],
                     body => "2\r\n{}\r\n0\r\n\r\n")), 501, 'NOT_IMPLEMENTED');
}
case('two Content-Length headers that differ',
     $t->raw(req(headers => [$AUTH, $JSON, 'Content-Length: 2', 'Content-Length: 3'],
                 body => '{} ')), 400, 'BAD_REQUEST');
for my $cl ('-1', '0x10', '+2', '2, 2', '99999999999999999999999', ' ') {
    case("Content-Length: '$cl'",
         $t->raw(req(headers => [$AUTH, $JSON, "Content-Length: $cl"], body => '{}')),
         400, 'BAD_REQUEST');
}

invariants('chunked bodies and framing');

# ============================================================ Expect

note('Expect: 100-continue');
{
    my $r = $t->create(key => K_UNKNOWN, headers => [Expect => '100-continue'],
                       body => '{}');
    case('Expect: 100-continue with an unknown key: 401', $r, 401, 'UNAUTHENTICATED');
    unlike($r->raw, qr{^HTTP/1\.1 100}, 'no 100 Continue for a refused request');

    $r = $t->raw(req(headers => [$AUTH, $JSON, "Content-Length: $MB",
                                 'Expect: 100-continue']));
    case('Expect: 100-continue with 1 MB declared: 413', $r, 413, 'PAYLOAD_TOO_LARGE');
    unlike($r->raw, qr{^HTTP/1\.1 100}, 'no 100 Continue before a 413');

    $r = $t->raw(req(headers => [$AUTH, 'Content-Type: text/plain',
                                 'Content-Length: 2', 'Expect: 100-continue']));
    case('Expect: 100-continue, text/plain: 415 without waiting for the body',
         $r, 415, 'UNSUPPORTED_MEDIA_TYPE');
    unlike($r->raw, qr{^HTTP/1\.1 100}, 'no 100 Continue before a 415');

    $r = $t->create(headers => [Expect => '100-continue'], body => '{"name":"Ava"}');
    case('Expect: 100-continue with an invalid body: 100, then 422', $r, 422,
         'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));

    $r = $t->create(headers => [Expect => '100-continue'], body => '{"name":"Ava"}',
                    chunked => [1, 1, 1]);
    case('Expect: 100-continue with a chunked invalid body', $r, 422,
         'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));

    $r = $t->create(headers => [Expect => '200-ok'], body => '{"name":"Ava"}');
    case('Expect: 200-ok (ignored): the body\'s 422', $r, 422, 'VALIDATION',
         message => 'Invalid body.', details => field(name => $NAME));

    $r = $t->create(headers => [Expect => '100-continue', Expect => '100-continue'],
                    body => '{"name":"Ava"}');
    case('Expect twice: nginx\'s 400', $r, 400, 'BAD_REQUEST');
}

invariants('Expect');

# ============================================================ slow bodies

note('bodies that arrive slowly or never finish (client_body_timeout 1s)');
{
    my $b = '{"name":"Ava","prompt":"' . ('s' x 40) . '"}';
    my $bytes = $t->request($t->create_args(body => $b));
    my $i = index($bytes, "\r\n\r\n") + 4;
    my @pieces = (substr($bytes, 0, $i));
    my $rest = substr($bytes, $i);
    push @pieces, substr($rest, 0, 8, '') while length $rest;
    case('a body in ' . (@pieces - 1) . ' pieces 0.3 s apart: the body\'s 422',
         $t->raw(\@pieces, pause => 0.3, timeout => 15), 422, 'VALIDATION',
         message => 'Invalid body.', details => field(name => $NAME));

    my $c = join('', map { "1\r\n$_\r\n" } split //, '{"gender":"robot"}') . "0\r\n\r\n";
    my @cp = (req(headers => [$AUTH, $JSON, 'Transfer-Encoding: chunked']));
    push @cp, substr($c, 0, 12, '') while length $c;
    case('1-byte chunks, written 0.3 s apart: the body\'s 422',
         $t->raw(\@cp, pause => 0.3, timeout => 30), 422, 'VALIDATION',
         message => 'Invalid body.', details => field(gender => $GENUM));
}
closed_case('a body that never finishes (Content-Length 100, 5 bytes sent)',
            req(headers => [$AUTH, $JSON, 'Content-Length: 100'], body => '{"pro'),
            2);
closed_case('a chunked body without its last chunk',
            chunked("2\r\n{}\r\n"), 2);
closed_case('a chunk that stops midway',
            chunked("10\r\n{\"pro"), 2);
closed_case('headers that never finish (client_header_timeout 1s)',
            "POST $PATH HTTP/1.1\r\nHost: localhost\r\n$AUTH\r\n", 2);
closed_case('a request line that never finishes', "POST $PATH HT", 2);
{
    # headers trickled 0.4 s apart: client_header_timeout counts from the
    # first byte, so nginx gives up after 1 s however busy the client looks
    my @p = map { "X-Slow-$_: 1\r\n" } 1 .. 10;
    unshift @p, "POST $PATH HTTP/1.1\r\nHost: localhost\r\n$AUTH\r\n";
    closed_case('headers trickled 0.4 s apart', \@p, 2, pause => 0.4);
}

invariants('slow bodies');

# ============================================================ pipelining

note('pipelined requests and bodies that hide a request');

# a request that would be accepted and forwarded: if it is ever executed,
# the invariants see its forward
my $HIDDEN = "POST $PATH HTTP/1.1\r\nHost: localhost\r\n$AUTH\r\n$JSON\r\n"
           . "Content-Length: 21\r\n\r\n{\"prompt\":\"smuggled\"}";

sub conn {
    my ($bytes) = @_;
    my $sock = $t->send_async($bytes);
    my $r = finish_async($sock, 10);
    return ($r, answers($r->raw));
}

{
    my ($r, @a) = conn(
        req(keepalive => 1, headers => ['Authorization: Bearer ' . K_UNKNOWN,
                                        'Content-Length: 0'])
        . req(keepalive => 1, path => '/v1/projects/nope/influencers',
              headers => [$AUTH, 'Content-Length: 0'])
        . req(line => "GET $PATH HTTP/1.1", headers => [$AUTH]));
    counted(3, map { $_->status } @a);
    is_deeply([map { $_->status } @a], [401, 422, 405],
              'three hostile requests pipelined: 401, 422, 405 in order');
    is_deeply([map { ($_->json || {})->{error}{code} // '' } @a],
              [qw(UNAUTHENTICATED VALIDATION METHOD_NOT_ALLOWED)],
              'three pipelined answers, each JSON');
    ok(!$r->timed_out, 'then nginx closes (Connection: close)');

    for my $c (
        ['Content-Length covering a request: the body is not JSON (422)',
         req(keepalive => 1, headers => [$AUTH, $JSON,
             'Content-Length: ' . (length($HIDDEN) + 2)], body => "{}$HIDDEN"),
         422, 'VALIDATION'],
        ['an unknown key, its body a request (discarded): 401',
         req(keepalive => 0, headers => ['Authorization: Bearer ' . K_UNKNOWN, $JSON,
             'Content-Length: ' . length($HIDDEN)], body => $HIDDEN),
         401, 'UNAUTHENTICATED'],
        ['GET with a body that is a request: 405',
         req(line => "GET $PATH HTTP/1.1", headers => [$AUTH,
             'Content-Length: ' . length($HIDDEN)], body => $HIDDEN),
         405, 'METHOD_NOT_ALLOWED'],
        ['a chunk whose data holds a last chunk and a request: 422',
         chunked(sprintf("%x\r\n0\r\n\r\n%s\r\n0\r\n\r\n", length("0\r\n\r\n$HIDDEN"),
                         $HIDDEN)),
         422, 'VALIDATION'],
        ['over the limit with a request inside the body: 413, closed',
         req(keepalive => 1, headers => [$AUTH, $JSON, 'Content-Length: 5000'],
             body => $HIDDEN . (' ' x (5000 - length $HIDDEN))),
         413, 'PAYLOAD_TOO_LARGE'],
        ['over the limit in 1-byte chunks, then a pipelined request: 413, closed',
         req(keepalive => 1, headers => [$AUTH, $JSON, 'Transfer-Encoding: chunked'],
             body => ("1\r\n \r\n" x 4200) . "0\r\n\r\n") . $HIDDEN,
         413, 'PAYLOAD_TOO_LARGE'],
        ['Content-Length and Transfer-Encoding (smuggling): 400, closed',
         req(keepalive => 1, headers => [$AUTH, $JSON, 'Content-Length: 4',
             'Transfer-Encoding: chunked'], body => "0\r\n\r\n$HIDDEN"),
         400, 'BAD_REQUEST'],
        ['HTTP/1.0 (no keepalive), then a pipelined request: one answer',
         req(version => 'HTTP/1.0', keepalive => 1, no_host => 1,
             headers => ['Authorization: Bearer ' . K_UNKNOWN]) . $HIDDEN,
         401, 'UNAUTHENTICATED'],
        ['a bad Transfer-Encoding, then a pipelined request: 501, closed',
         req(keepalive => 1, headers => [$AUTH, $JSON, 'Transfer-Encoding: xchunked'])
         . $HIDDEN,
         501, 'NOT_IMPLEMENTED'])
    {
        my ($what, $bytes, $status, $code) = @$c;
        my ($raw, @ans) = conn($bytes);
        case("pipelined: $what", $ans[0] // $raw, $status, $code,
             allow_details => 1, more_answers => 1,
             ($code eq 'VALIDATION' ? (details => form($BADJSON),
                                       message => 'Invalid body.') : ()));
        is(scalar @ans, 1, "pipelined: $what: one answer only")
            or diag(printable($raw->raw));
    }
}

invariants('pipelining');

# ============================================================ HTTP versions

note('HTTP/1.0 and HTTP/0.9');
case('HTTP/1.0 with an invalid body',
     $t->raw(req(version => 'HTTP/1.0', no_host => 1, keepalive => 1,
                 headers => [$AUTH, $JSON, 'Content-Length: 14'],
                 body => '{"name":"Ava"}')),
     422, 'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));
case('HTTP/1.0 with Transfer-Encoding: chunked',
     $t->raw(req(version => 'HTTP/1.0', no_host => 1, keepalive => 1,
                 headers => [$AUTH, $JSON, 'Transfer-Encoding: chunked'],
                 body => "2\r\n{}\r\n0\r\n\r\n")), 400, 'BAD_REQUEST');
case('HTTP/1.0 with Expect: 100-continue and an unknown key',
     $t->raw(req(version => 'HTTP/1.0', no_host => 1, keepalive => 1,
                 headers => ['Authorization: Bearer ' . K_UNKNOWN,
                             'Expect: 100-continue', 'Content-Length: 2'],
                 body => '{}')), 401, 'UNAUTHENTICATED');
case('"HTTP/0.9" spelled out in the request line',
     $t->raw(req(version => 'HTTP/0.9', headers => [$AUTH])), 400, 'BAD_REQUEST');
case('a lowercase protocol name',
     $t->raw(req(version => 'http/1.1', headers => [$AUTH])), 400, 'BAD_REQUEST');
case('a request line with a fourth word',
     $t->raw(req(line => "POST $PATH HTTP/1.1 junk", headers => [$AUTH])),
     400, 'BAD_REQUEST');
case('a lowercase method',
     $t->raw(req(line => "post $PATH HTTP/1.1", headers => [$AUTH])),
     400, 'BAD_REQUEST');
case('a method of 5000 letters',
     $t->raw(req(line => ('P' x 5000) . " $PATH HTTP/1.1", headers => [$AUTH])),
     405, 'METHOD_NOT_ALLOWED');

# nginx answers a version it does not speak with 505: the error_page above
# hands it to influencers_errors, which answers it as JSON
for my $v ('HTTP/2.0', 'HTTP/9.9') {
    my $r = $t->raw(req(version => $v, headers => [$AUTH]));
    counted(1, "$v (505)");
    like($r->header('content-type') // '', qr{^application/json},
         "$v in the request line: JSON, not nginx's HTML");
    like((($r->json || {})->{error} || {})->{requestId} // '', qr/^${\REQID_RE}$/,
         "$v in the request line: a JSON error with a requestId");
    is($r->status, 505, "$v in the request line: 505, not 500");
    is((($r->json || {})->{error} || {})->{code} // '', 'HTTP_VERSION_NOT_SUPPORTED',
       "$v in the request line: code HTTP_VERSION_NOT_SUPPORTED");
}

{
    # HTTP/0.9 has no status line and no headers: nginx sends the body alone.
    # A GET reaches the module (405); any other method is nginx's 400
    # ("invalid method in HTTP/0.9 request"), through influencers_errors.
    # Either way what comes is the module's JSON.
    for my $c (['GET of the endpoint', "GET $PATH\r\n", 'METHOD_NOT_ALLOWED'],
               ['GET of another path', "GET /nothing\r\n", 'NOT_FOUND'],
               ['GET with %00', "GET /v1/projects/%00/influencers\r\n", 'BAD_REQUEST'],
               ['POST (refused by nginx)', "POST $PATH\r\n", 'BAD_REQUEST'],
               ['PUT (refused by nginx)', "PUT $PATH\r\n", 'BAD_REQUEST'])
    {
        my ($what, $bytes, $code) = @$c;
        my $r = $t->raw($bytes);
        counted(1, '0.9');
        my $j = json_decode($r->raw);
        subtest "HTTP/0.9 $what: the JSON error alone" => sub {
            ok(!$r->timed_out, 'answered and closed');
            unlike($r->raw, qr/<html|HTTP\//i, 'no status line, no HTML');
            ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH', 'a JSON error')
                or diag(printable($r->raw));
            is($j && $j->{error}{code}, $code, "code $code");
            like($j && $j->{error}{requestId}, qr/^${\REQID_RE}$/, 'a requestId');
        };
    }
}

invariants('HTTP versions');

# ============================================================ paths

note('paths');
for my $c (['/v1/projects/../influencers', 404, 'NOT_FOUND'],
           ['/v1/projects/%2e%2e/influencers', 404, 'NOT_FOUND'],
           ["/v1/projects/$ID/../influencers", 404, 'NOT_FOUND'],
           ["/v1/projects/$ID/influencers/..", 404, 'NOT_FOUND'],
           ['/v1/projects/..%2finfluencers', 404, 'NOT_FOUND'],
           ['/v1/projects/0b5e8f8a%2F6a2c-4c1e-9d3b-1f2e3d4c5b6a/influencers', 404,
            'NOT_FOUND'],
           ['/v1/projects/%2F/influencers', 404, 'NOT_FOUND'],
           ["$PATH/", 404, 'NOT_FOUND'],
           ["$PATH//", 404, 'NOT_FOUND'],
           ["$PATH/.", 404, 'NOT_FOUND'],
           ["$PATH;x=1", 404, 'NOT_FOUND'],
           [uc($PATH), 404, 'NOT_FOUND'],
           ["/v1/projects/$ID/influencers\\..", 404, 'NOT_FOUND'],
           ['/../../etc/passwd', 400, 'BAD_REQUEST'],
           ["/v1/projects/$ID%00.json/influencers", 400, 'BAD_REQUEST'],
           ["/v1/projects/%00/influencers", 400, 'BAD_REQUEST'])
{
    my ($p, $status, $code) = @$c;
    case("path $p", $t->create(path => $p), $status, $code);
}
for my $p ('%0a', "$ID%0d%0aX-Injected:%201", '{' . $ID . '}', "urn:uuid:$ID",
           join('', split /-/, $ID), "$ID-", substr($ID, 1), 'null', '%25',
           "\xef\xbc\x90" . substr($ID, 1), 'a' x 3000, "$ID%20", "%20$ID")
{
    case('projectId ' . printable($p), $t->create(path => "/v1/projects/$p/influencers"),
         422, 'VALIDATION', message => 'Invalid path parameter.',
         details => field(projectId => 'Invalid uuid'));
}
case('a URI over large_client_header_buffers: 414',
     $t->create(path => "/v1/projects/" . ('a' x 9000) . '/influencers'),
     414, 'URI_TOO_LONG');

# an encoded slash is decoded, and the two slashes merged: the same path
case('an encoded slash before /influencers (decoded and merged): the body\'s 422',
     $t->create(path => "/v1/projects/$ID%2F/influencers", body => '{"name":"Ava"}'),
     422, 'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));

note('query strings: ignored (not the resource, not the fingerprint)');
for my $q ('gender=male', 'a=%00', "a=\xff\xfe", 'projectId=' . P_GLOBEX,
           'x=' . ('q' x 3000), '%', '&&&;;', 'a=1&a=2')
{
    case('a query string ' . printable($q) . ' with an invalid body: the body\'s 422',
         $t->create(path => "$PATH?$q", body => '{"name":"Ava"}'), 422,
         'VALIDATION', message => 'Invalid body.', details => field(name => $NAME));
}

invariants('paths');

# ============================================================ the count

Hostile::the_count('hostile requests');

# ============================================================ controls

# legal requests among all that: the query string and chunk framing do not
# change what is forwarded
{
    my $r = $t->create(path => "$PATH?gender=male&projectId=" . P_GLOBEX,
                       body => '{"prompt":"query ignored"}');
    check_accepted($r, 'control: a query string on a good request: 202');
    my @req = $t->wait_backend_requests($FORWARDS + 1);
    my $fwd = json_decode(($req[-1] || {})->{body} // '') || {};
    is_deeply([$fwd->{projectId}, $fwd->{params}],
              [$ID, { gender => 'female', ageRange => 'young_adult',
                      prompt => 'query ignored' }],
              'control: the query string changed nothing in the forward');

    $r = $t->raw(chunked("6;ext\r\n{\"gend\r\n11\r\ner\":\"non_binary\"}\r\n"
                         . "0\r\nX-Trailer: 1\r\n\r\n"));
    check_accepted($r, 'control: a chunked body with extensions and a trailer: 202');
    @req = $t->wait_backend_requests($FORWARDS + 2);
    $fwd = json_decode(($req[-1] || {})->{body} // '') || {};
    is(($fwd->{params} || {})->{gender}, 'non_binary',
       'control: the chunked body was decoded whole');
    is(scalar @req, $FORWARDS + 2, 'control: two forwards, no more');
}

Hostile::the_end();

done_testing;
