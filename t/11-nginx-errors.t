#!/usr/bin/perl

# CONTRACT 2 (every answer JSON with X-Request-Id) and 7 (requests nginx
# refuses before any module code still get JSON, via influencers_errors).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

# the default server hands errors to the documented internal URI location
# (/_influencers/error); a second server does the same with another URI
# and its own limits.  Both must answer JSON.
my $ERRORS = <<'EOF';
        location = /boom { return 500; }
        location = /unavailable { return 503; }
        location = /bad { return 400; }
EOF
my $LIMITS = "large_client_header_buffers 4 1k;\n        client_max_body_size 8k;";
my $t = InfTest->setup(server => "        $LIMITS\n$ERRORS",
                       http => endpoint_server(port => 'URI', top => $LIMITS,
                           error_target => '/_influencers_error',
                           server => $ERRORS));

my $path = '/v1/projects/' . P_FEMALE . '/influencers';
my $auth = 'Authorization: Bearer ' . K_WRITE . "\r\n";

for my $variant (['main', 'named location'], ['uri', 'URI location']) {
my ($port, $how) = @$variant;
note("error_page to a $how");
local $t->{ports}{main} = $t->port($port);

# ------------------------------------------------------------ 400

my $r = $t->raw("GET /v1 HTTP/1.1 junk\r\nHost: localhost\r\n\r\n");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: malformed request line: 400 JSON");

$r = $t->raw("POST $path HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n$auth\r\n");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: two Host headers: 400 JSON");

$r = $t->raw("POST $path HTTP/1.1\r\nHost: ../etc\r\n$auth\r\n");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: invalid Host header: 400 JSON");

$r = $t->raw("POST $path HTTP/1.1\r\n$auth\r\n");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: HTTP/1.1 without Host: 400 JSON");

$r = $t->raw("POST $path HTTP/1.1\r\nHost: localhost\r\n$auth"
             . "Content-Length: 12\r\nContent-Length: 12\r\n\r\n{}          ");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: two Content-Length headers: 400 JSON");

$r = $t->raw("POST $path HTTP/1.1\r\nHost: localhost\r\n$auth"
             . "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
check_error($r, 400, 'BAD_REQUEST', undef, "$how: a broken chunked body: 400 JSON");

$r = $t->http(GET => '/bad');
check_error($r, 400, 'BAD_REQUEST', undef, "$how: a 400 from another location: JSON");

# ------------------------------------------------------------ 414, 494

$r = $t->http(POST => "$path?" . ('a' x 3000), [Authorization => 'Bearer ' . K_WRITE], '{}');
check_error($r, 414, 'URI_TOO_LONG', undef, "$how: a URI over large_client_header_buffers: 414 JSON");

$r = $t->http(POST => $path, [Authorization => 'Bearer ' . K_WRITE,
                              'X-Big' => 'b' x 2000], '{}');
check_error($r, 400, 'BAD_REQUEST', undef,
            "$how: a header over large_client_header_buffers (494): 400 JSON");

$r = $t->http(POST => $path, [Authorization => 'Bearer ' . ('k' x 3000)], '{}');
check_error($r, 400, 'BAD_REQUEST', undef, "$how: a huge Authorization header: 400 JSON");
unlike($r->body, qr/kkkkkkkk/, "$how: the huge header is not echoed");

# ------------------------------------------------------------ 413

$r = $t->http(POST => $path, [Authorization => 'Bearer ' . K_WRITE,
                              'Content-Type' => 'application/json',
                              'Content-Length' => 100000], '',
              no_content_length => 1, timeout => 3);
check_error($r, 413, 'PAYLOAD_TOO_LARGE', undef,
            "$how: a declared body over client_max_body_size: 413 JSON");

# ------------------------------------------------------------ TRACE, 404, 500, 503

$r = $t->http(TRACE => $path);
check_error($r, 405, 'METHOD_NOT_ALLOWED', undef, "$how: TRACE: 405 JSON");
is($r->header('allow'), 'POST', "$how: TRACE: Allow: POST");

$r = $t->http(GET => '/nothing/here');
check_error($r, 404, 'NOT_FOUND', undef, "$how: a path outside the endpoint: 404 JSON");

$r = $t->http(GET => '/boom');
check_error($r, 500, 'INTERNAL', undef, "$how: a 500 from another location: JSON");

$r = $t->http(GET => '/unavailable');
is($r->status, 503, "$how: a 503: status 503");
like($r->header('content-type') // '', qr{^application/json}, "$how: a 503: JSON");
like($r->header('x-request-id') // '', qr/^${\REQID_RE}$/, "$how: a 503: X-Request-Id");

# a request that was fine goes on working
check_accepted($t->create, "$how: a normal request after all that: accepted");
}

is(scalar(my @b = $t->backend_requests), 2, 'none of the refused requests was forwarded');

$t->check_log_clean;

done_testing;
