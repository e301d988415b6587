#!/usr/bin/perl

# The harness itself, against a plain nginx (no module): ports, config
# expansion, run/reload/stop, the raw client, backend.pl and its records.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

my $t = InfTest->new;

# ------------------------------------------------------------------- config

my ($rc, $err);
$t->conf(<<'EOF');
worker_processes 2;
master_process on;
daemon off;
%%MAIN_GLOBALS%%
events { worker_connections 64; }
http {
    %%HTTP_GLOBALS%%
    server {
        listen 127.0.0.1:%%PORT%%;
        no_such_directive on;
    }
}
EOF
($rc, $err) = $t->test_config;
isnt($rc, 0, 'test_config: a bad configuration fails nginx -t');
like($err, qr/\[emerg\].*unknown directive "no_such_directive"/,
     'test_config: the [emerg] line is on stderr');

my $conf = $t->conf(<<'EOF');
worker_processes 2;
master_process on;
daemon off;
%%MAIN_GLOBALS%%
events { worker_connections 64; }
http {
    %%HTTP_GLOBALS%%
    upstream be { server 127.0.0.1:%%BACKEND_PORT%%; keepalive 4; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /hello { return 200 "hello $request_method\n"; }
        location = /echo-headers {
            return 200 "ct=$http_content_type cl=$http_content_length";
        }
        location /proxy/ {
            proxy_pass http://be/back/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 1s;
        }
        location = /body {
            client_body_buffer_size 16k;
            proxy_pass http://be/body;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:%%PORT_2%%;
        location / { return 204; }
    }
}
EOF

unlike($conf, qr/%%/, 'conf: every placeholder expanded');
like($conf, qr/listen 127\.0\.0\.1:(\d+);/, 'conf: %%PORT%% is a port');
isnt($t->port, $t->port('backend'), 'ports: distinct');
isnt($t->port(2), $t->port, 'ports: %%PORT_2%% distinct');
like($conf, qr/client_body_temp_path \Q${\$t->dir}\E/,
     'conf: temp paths inside the test dir');

($rc, $err) = $t->test_config;
is($rc, 0, 'test_config: a good configuration passes') or diag $err;

# ------------------------------------------------------------------ backend

$t->start_backend;
$t->run;

ok($t->nginx_alive, 'run: nginx is up');
is(scalar(my @w = $t->worker_pids), 2, 'worker_pids: two workers');

my $r = $t->http(GET => '/hello');
is($r->status, 200, 'http: GET status');
is($r->body, "hello GET\n", 'http: GET body');
is($r->header('Content-Type'), 'text/plain', 'http: header lookup');

$r = $t->http(HEAD => '/hello');
is($r->status, 200, 'http: HEAD status');
is($r->body, '', 'http: HEAD has no body');

$r = $t->http(GET => '/x', undef, undef, port => $t->port(2));
is($r->status, 204, 'http: second port, 204');

$r = $t->raw("GET /hello HTTP/1.0\r\n\r\n");
is($r->status, 200, 'raw: HTTP/1.0 request');

$r = $t->raw("BAD\r\n\r\n");
is($r->status, 400, 'raw: malformed request line gives 400');

$r = $t->http(POST => '/proxy/x?a=1',
              [ 'Content-Type' => 'application/json', 'X-Dup' => 'a',
                'X-Dup' => 'b' ], '{"a":1}');
is($r->status, 202, 'backend: default status 202');
is($r->json->{accepted}, JSON::PP::true(), 'backend: default JSON body');
my @req = $t->backend_requests;
is(scalar @req, 1, 'backend: one request recorded');
is($req[0]{method}, 'POST', 'backend: method recorded');
is($req[0]{uri}, '/back/x?a=1', 'backend: uri recorded');
is($req[0]{body}, '{"a":1}', 'backend: body recorded');
is_deeply($req[0]{h}{'x-dup'}, ['a', 'b'], 'backend: duplicate headers kept');
ok((grep { $_->[0] eq 'X-Dup' } @{ $req[0]{headers} }),
   'backend: header names keep their case');

$t->set_backend(status => 500, body => 'oops', content_type => 'text/plain',
                headers => { 'X-Answer' => 'yes' });
$r = $t->http(GET => '/proxy/y');
is($r->status, 500, 'set_backend: status');
is($r->body, 'oops', 'set_backend: body');
is($r->header('x-answer'), 'yes', 'set_backend: extra header');

$t->set_backend(status => 200, rules => [
    { header => 'authorization', value => 'Bearer one', status => 201 },
    { uri => '/back/two', status => 203 },
]);
is($t->http(GET => '/proxy/z', [Authorization => 'Bearer one'])->status, 201,
   'set_backend: header rule');
is($t->http(GET => '/proxy/two')->status, 203, 'set_backend: uri rule');
is($t->http(GET => '/proxy/z')->status, 200, 'set_backend: fallback');

$t->set_backend(status => 200, delay => 2);
$r = $t->http(GET => '/proxy/slow');
is($r->status, 504, 'set_backend: delay beyond proxy_read_timeout gives 504');

$t->set_backend(drop => 1);
$r = $t->http(GET => '/proxy/drop');
is($r->status, 502, 'set_backend: drop gives 502');

$t->set_backend(status => 200);

# chunked request bodies, read by nginx and passed on with a length
$r = $t->http(POST => '/body', [], 'x' x 3000, chunked => [1000, 7, 1993]);
is($r->status, 200, 'http: chunked request');
@req = $t->backend_requests;
is($req[-1]{body}, 'x' x 3000, 'http: chunked body reassembled');

# keepalive to the backend: several requests, at most a few connections
$t->http(GET => '/proxy/ka') for 1 .. 5;
@req = $t->backend_requests;
my %pids = map { $_->{pid} => 1 } @req[-5 .. -1];
cmp_ok(scalar keys %pids, '<=', 2, 'backend: keepalive connections reused');

# close_after: the client goes away
is($t->http(GET => '/hello', [], undef, close_after => 0.1), undef,
   'http: close_after returns undef');

# a response read by Content-Length, not until EOF
$r = $t->http(GET => '/hello', [Connection => 'keep-alive'], undef,
              timeout => 2);
is($r->status, 200, 'http: keepalive response read by length');
ok(!$r->timed_out, 'http: no timeout on a keepalive response');

# a body sent in two pieces, apart
$r = $t->http(POST => '/body', [], 'y' x 2000, pause => 0.3);
is($r->status, 200, 'http: body sent in two pieces');
@req = $t->backend_requests;
is($req[-1]{body}, 'y' x 2000, 'http: pieces reassembled');

# several requests on one connection
my @rs = $t->session([GET => '/hello'], [POST => '/body', [], 'abc'],
                     "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
                     [HEAD => '/hello'], [GET => '/hello', [Connection => 'close']]);
is(scalar @rs, 5, 'session: five answers');
is_deeply([map { $_->status } @rs], [200, 200, 200, 200, 200], 'session: all 200');
is($rs[3]->body, '', 'session: HEAD without a body');
is($rs[4]->body, "hello GET\n", 'session: last body');

# ------------------------------------------------------------------- reload

my @old = $t->worker_pids;
ok($t->reload, 'reload: new workers up');
my @new = $t->worker_pids;
is(scalar @new, 2, 'reload: two workers');
ok(!(grep { my $o = $_; grep { $_ == $o } @new } @old),
   'reload: all workers are new');
is($t->http(GET => '/hello')->status, 200, 'reload: still serving');

# a broken configuration is refused, the old one goes on
$t->write_file('nginx.conf', "events {}\nhttp { bogus; }\n");
ok(!$t->reload, 'reload: refused configuration detected');
is($t->http(GET => '/hello')->status, 200, 'reload: old config still serving');

# ------------------------------------------------------------- helpers

is(ulid_ms('01ARZ3NDEKTSV4RRFFQ69G5FAV'), 1469922850259, 'ulid_ms');
is(iso_ms(1469922850259), '2016-07-30T23:54:10.259Z', 'iso_ms');
is(iso_ms(1000), '1970-01-01T00:00:01.000Z', 'iso_ms: three digits');
like($t->directory_json(keys => [{ key => 'abc', org => 'o', scopes => [] }],
                        projects => []),
     qr/"sha256" : "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"/,
     'directory_json: keys hashed with sha256');

my $shm = $t->shared_memory_of(($t->worker_pids)[0]);
ok(defined $shm, 'shared_memory_of: readable');

$t->check_log_clean(allow_emerg => 1);

ok(!$t->nginx_alive, 'stop: nginx stopped');

done_testing;
