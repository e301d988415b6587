#!/usr/bin/perl

# Every status the module answers has its reason phrase in the HTTP/1.1
# status line: nginx 1.22 has none for 422 and would send "HTTP/1.1 422 "
# alone, so the module sends "422 Unprocessable Content" (RFC 9110).  Over
# HTTP/2 there is no reason phrase: the status alone, 422 included.
#
# 408 is the one status the error handler knows that cannot be provoked:
# nginx never answers it (a client timeout, or even `return 408`, closes
# the connection without an answer, so error_page 408 is never reached).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(
    read_timeout => '1s',
    upstream => 'max_fails=0',
    error_page => '400 401 403 404 405 408 413 414 415 494 500 501 502 503 504',
    server => <<'EOF' . '        ' . STATS_LOCATION . "\n",
        large_client_header_buffers 4 1k;
        client_max_body_size 8k;
        location = /boom { return 500; }
        location = /unavailable { return 503; }
        location = /timeout { return 408; }
EOF
    http => "influencers_zone zone=tiny:32k;\n"
          . endpoint_server(port => 'TINY', zone => 'tiny', error_page => '',
                            render => '/_render_tiny', keepalive => 0)
          . endpoint_server(port => 'H2', listen => ' http2', error_page => '',
                            render => '/_render_h2', keepalive => 0));

my $path = '/v1/projects/' . P_FEMALE . '/influencers';
my $auth = 'Bearer ' . K_WRITE;

# the first status line of an answer, interim 1xx ones skipped
sub status_line {
    my ($r) = @_;
    my $raw = $r->raw // '';
    $raw =~ s/\AHTTP\/1\.[01] 1\d\d[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n//
        while $raw =~ /\AHTTP\/1\.[01] 1\d\d/;
    return $raw =~ /\A([^\r\n]*)\r\n/ ? $1 : '';
}

my %seen;

# the status line is "HTTP/1.1 NNN <reason>", the reason non-empty (and
# exactly $phrase when given), and the answer the module's JSON one
sub line_ok {
    my ($r, $status, $code, $name, $phrase) = @_;
    $seen{$status}++;
    my $line = status_line($r);
    subtest "$status $code ($name): a reason phrase" => sub {
        like($line, qr{^HTTP/1\.1 $status [\x21-\x7e][\x20-\x7e]*$},
             "status line 'HTTP/1.1 $status <reason>'")
            or diag("status line: '$line'\n" . $r->summary);
        is($line, "HTTP/1.1 $status $phrase", "exactly '$status $phrase'")
            if defined $phrase;
        like($r->header('content-type') // '', qr{^application/json},
             'the module\'s JSON');
        if ($status == 202) {
            like($r->body, ACCEPT_RE, 'the job envelope');
        } elsif ($status != 200) {
            is(($r->json || {})->{error}{code}, $code, "code $code")
                or diag($r->summary);
        }
    };
}

my $UNPROCESSABLE = 'Unprocessable Content';

# ------------------------------------------------------------ the module's own

line_ok($t->create, 202, 'ACCEPTED', 'a new job');
line_ok($t->create(key => undef), 401, 'UNAUTHENTICATED', 'no API key');
line_ok($t->create(key => K_READ), 403, 'FORBIDDEN_SCOPE', 'no write scope');
line_ok($t->create(project => P_GLOBEX), 404, 'NOT_FOUND',
        'another org\'s project');
line_ok($t->create(method => 'GET', body => undef), 405,
        'METHOD_NOT_ALLOWED', 'GET');
line_ok($t->create(body => '{"prompt":"' . ('x' x 5000) . '"}'), 413,
        'PAYLOAD_TOO_LARGE', 'over influencers_body_limit');
line_ok($t->create(ctype => 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE',
        'text/plain');

line_ok($t->create(body => '{"name":"Ava"}'), 422, 'VALIDATION',
        'an invalid body', $UNPROCESSABLE);
line_ok($t->create(project => 'not-a-uuid'), 422, 'VALIDATION',
        'an invalid projectId', $UNPROCESSABLE);
line_ok($t->create(headers => ['Idempotency-Key' => '"a b"']), 422,
        'VALIDATION', 'an invalid Idempotency-Key', $UNPROCESSABLE);
line_ok($t->raw("POST $path HTTP/1.0\r\nAuthorization: $auth\r\n"
                . "Content-Type: application/json\r\nContent-Length: 2\r\n"
                . "\r\n[]"),
        422, 'VALIDATION', 'an HTTP/1.0 request (answered in HTTP/1.1)',
        $UNPROCESSABLE);

check_new_job($t->idem('status-lines-1', body => '{"prompt":"a"}'),
              'a first request with a key');
line_ok($t->idem('status-lines-1', body => '{"prompt":"b"}'), 422,
        'IDEMPOTENCY_KEY_REUSED', 'the key with another body', $UNPROCESSABLE);

$t->set_backend(delay => 0.6);
my $sock = $t->idem_async('status-lines-2');
Time::HiRes::sleep(0.2);
line_ok($t->idem('status-lines-2'), 409, 'IDEMPOTENCY_IN_PROGRESS',
        'the same key in flight');
is(finish_async($sock)->status, 202, 'the first one in flight: 202');

$t->set_backend(status => 404);
line_ok($t->create, 404, 'NOT_FOUND', 'the backend\'s 404');
$t->set_backend(status => 500);
line_ok($t->create, 502, 'UPSTREAM_ERROR', 'the backend\'s 500');
$t->set_backend(delay => 2);
line_ok($t->create, 504, 'UPSTREAM_TIMEOUT', 'slower than proxy_read_timeout');
$t->set_backend();

{
    # a full zone: keyed entries that nothing may evict
    my $port = $t->port('tiny');
    my $r;
    for my $i (1 .. 500) {
        $r = $t->idem("fill-$i", port => $port);
        last if $r->status != 202;
    }
    line_ok($r, 503, 'CAPACITY', 'a full zone');
}

my ($stats, $sr) = $t->stats;
line_ok($sr, 200, 'stats', 'influencers_stats');

# ------------------------------------------------------------ through influencers_errors

line_ok($t->raw("GET /v1 HTTP/1.1 junk\r\nHost: localhost\r\n\r\n"), 400,
        'BAD_REQUEST', 'a malformed request line');
line_ok($t->http(POST => $path, [Authorization => $auth, 'X-Big' => 'b' x 2000],
                 '{}'),
        400, 'BAD_REQUEST', 'a header over large_client_header_buffers (494)');
line_ok($t->http(GET => '/nothing/here'), 404, 'NOT_FOUND',
        'a path outside the endpoint');
line_ok($t->http(TRACE => $path), 405, 'METHOD_NOT_ALLOWED', 'TRACE');
line_ok($t->http(POST => $path, [Authorization => $auth,
                                 'Content-Type' => 'application/json',
                                 'Content-Length' => 100000], '',
                 no_content_length => 1),
        413, 'PAYLOAD_TOO_LARGE', 'over client_max_body_size');
line_ok($t->http(POST => "$path?" . ('a' x 3000), [Authorization => $auth], '{}'),
        414, 'URI_TOO_LONG', 'a URI over large_client_header_buffers');
line_ok($t->http(GET => '/boom'), 500, 'INTERNAL', 'a 500 elsewhere');
line_ok($t->raw("POST $path HTTP/1.1\r\nHost: localhost\r\n"
                . "Transfer-Encoding: gzip\r\n\r\n"),
        501, 'NOT_IMPLEMENTED', 'an unknown Transfer-Encoding');
line_ok($t->http(GET => '/unavailable'), 503, 'UNAVAILABLE', 'a 503 elsewhere');

{
    my $r = $t->http(GET => '/timeout');
    ok($r->status == 0 && !$r->timed_out,
       '408: the connection is closed without an answer')
        or diag($r->summary);
}

is(join(' ', sort { $a <=> $b } keys %seen),
   '200 202 400 401 403 404 405 409 413 414 415 422 500 501 502 503 504',
   'every status the module answers was seen');

# ------------------------------------------------------------ HTTP/2

SKIP: {
    my $curl = `curl -V 2>/dev/null` // '';
    skip 'curl with HTTP/2 not installed', 4 unless $curl =~ /^Features:.*\bHTTP2\b/m;

    # (curl's -w output, the headers it printed, the body)
    my $h2 = sub {
        my ($body, $name) = @_;
        my @cmd = ('curl', '-sS', '--http2-prior-knowledge', '--max-time', '5',
                   '-o', $t->path("h2-$name.body"),
                   '-D', $t->path("h2-$name.headers"),
                   '-w', '%{http_version} %{response_code}',
                   '-H', "Authorization: $auth",
                   '-H', 'Content-Type: application/json',
                   '--data-binary', $body,
                   'http://127.0.0.1:' . $t->port('h2') . $path);
        open(my $fh, '-|', @cmd) or die "curl: $!";
        my $code = do { local $/; <$fh> } // '';
        close $fh;
        return ($code, $t->read_file("h2-$name.headers") // '',
                $t->read_file("h2-$name.body") // '');
    };

    my ($code, $headers, $body) = $h2->('{"name":"Ava"}', 'invalid');
    is($code, '2 422', 'HTTP/2: :status 422');
    like($headers, qr{\AHTTP/2 422[ \t]*\r?\n}, 'HTTP/2: no reason phrase')
        or diag($headers);
    is((json_decode($body) || {})->{error}{code}, 'VALIDATION',
       'HTTP/2: the VALIDATION body') or diag($body);

    ($code) = $h2->('{}', 'accepted');
    is($code, '2 202', 'HTTP/2: :status 202');
}

$t->check_log_clean;

done_testing;
