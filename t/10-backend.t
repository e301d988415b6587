#!/usr/bin/perl

# CONTRACT 4 (backend outcomes), 2 (404, 502, 504 rows), 7 (backend's own
# 504 and 3xx are 502; only nginx's timeout is 504); a client that goes
# away while the job is being forwarded.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(upstream => 'max_fails=0', read_timeout => '1s');

sub count { return scalar(my @r = $t->backend_requests); }

# ------------------------------------------------------------ 2xx

for my $s (200, 201, 202, 204) {
    $t->set_backend(status => $s, body => '{"backend":"own-body-text"}');
    my $r = $t->create;
    check_accepted($r, "backend $s: 202 envelope");
    unlike($r->body, qr/own-body-text/, "backend $s: its body is not passed on");
}

# the backend's body, whatever its size or encoding, is not the partner's
$t->set_backend(status => 200, body => '{"pad":"' . ('p' x 200000) . '"}');
check_accepted($t->create, 'backend 200 with a 200 KB body: 202 envelope');
$t->set_backend(status => 201, chunked => 1, body => '{"pad":"' . ('c' x 50000) . '"}');
check_accepted($t->create, 'backend 201 with a chunked 50 KB body: 202 envelope');
$t->set_backend(status => 202, chunked => 1, body => '{"ok":true}');
check_accepted($t->create, 'backend 202 with a small chunked body: 202 envelope');
$t->set_backend(status => 202, body => 'not json at all', content_type => 'text/html');
check_accepted($t->create, 'backend 202 with an HTML body: 202 envelope');
$t->set_backend(status => 404, body => '<html>' . ('x' x 100000) . '</html>',
                content_type => 'text/html');
check_error($t->create, 404, 'NOT_FOUND', 'Project not found.',
            'backend 404 with a 100 KB HTML body: 404 NOT_FOUND');
$t->set_backend(status => 500, chunked => 1, body => 'y' x 30000);
check_error($t->create, 502, 'UPSTREAM_ERROR', undef,
            'backend 500 with a chunked 30 KB body: 502');

# ------------------------------------------------------------ 404

$t->set_backend(status => 404, body => '{"error":"no such project"}');
my $r = $t->create;
check_error($r, 404, 'NOT_FOUND', 'Project not found.', 'backend 404: 404 NOT_FOUND');
unlike($r->body, qr/no such project/, 'backend 404: its body is not passed on');
my @req = $t->backend_requests;
is($r->header('x-request-id'), $req[-1]{h}{'x-request-id'}[0],
   'backend 404: the answer\'s X-Request-Id is the forward\'s');

# ------------------------------------------------------------ 502

for my $case ([500], [503], [400], [409], [422], [429], [401], [403],
              [504, 'its own 504'],
              [301, 'a redirect', { Location => 'http://127.0.0.1:1/elsewhere' }],
              [302, 'a redirect', { Location => '/elsewhere' }])
{
    my ($s, $why, $h) = @$case;
    $why = defined $why ? "backend $s ($why)" : "backend $s";
    $t->set_backend(status => $s, body => '{"detail":"backend-detail"}',
                    headers => $h || {});
    my $n = count();
    $r = $t->create;
    check_error($r, 502, 'UPSTREAM_ERROR', undef, "$why: 502 UPSTREAM_ERROR");
    unlike($r->body, qr/backend-detail/, "$why: its body is not passed on");
    ok(!defined $r->header('location') || $r->header('location') !~ /elsewhere/,
       "$why: no Location passed on") if $h;
    is(count(), $n + 1, "$why: the job was forwarded once");
}

$t->set_backend(status => 500);
$r = $t->create;
@req = $t->backend_requests;
is($r->header('x-request-id'), $req[-1]{h}{'x-request-id'}[0],
   'backend 500: the answer\'s X-Request-Id is the forward\'s');

$t->set_backend(drop => 1);
check_error($t->create, 502, 'UPSTREAM_ERROR', undef,
            'backend closes the connection without answering: 502');

$t->set_backend(status => 202, close => 1);
check_accepted($t->create, 'backend answers 202 with Connection: close: 202');

# the backend is down
$t->set_backend(status => 202);
$t->stop_backend;
my $t0 = Time::HiRes::time();
$r = $t->create;
check_error($r, 502, 'UPSTREAM_ERROR', undef, 'backend down (connection refused): 502');
cmp_ok(Time::HiRes::time() - $t0, '<', 2, 'backend down: answered at once');
$t->start_backend;
check_accepted($t->create, 'backend back up: 202 again');

# ------------------------------------------------------------ 504

$t->set_backend(status => 202, delay => 2);
my $n = count();
$t0 = Time::HiRes::time();
$r = $t->create;
my $took = Time::HiRes::time() - $t0;
check_error($r, 504, 'UPSTREAM_TIMEOUT', undef,
            'backend slower than proxy_read_timeout (1s): 504 UPSTREAM_TIMEOUT');
ok($took >= 0.9 && $took < 1.9, 'the 504 comes after proxy_read_timeout')
    or diag("took $took s");
is(count(), $n + 1, 'timeout: the job was forwarded once (no retry)');

# a 504 answered quickly by the backend itself is a 502 (checked above);
# after a timeout the next request goes through
Time::HiRes::sleep(1.2);
$t->set_backend(status => 202);
check_accepted($t->create, 'after a timeout: the next request is accepted');

# ------------------------------------------------------------ client goes away

my @workers = $t->worker_pids;
$t->set_backend(status => 202, delay => 1.5);
$n = count();
$t->create(close_after => 0.3);
my @got = $t->wait_backend_requests($n + 1, timeout => 4);
is(scalar @got, $n + 1, 'client gone mid-forward: the backend got the job');
Time::HiRes::sleep(1.8);   # the backend answers; nginx finishes the subrequest
is(count(), $n + 1, 'client gone mid-forward: exactly one job forwarded');
ok($t->nginx_alive, 'client gone mid-forward: nginx still running');
is_deeply([$t->worker_pids], \@workers, 'client gone mid-forward: no worker died');

# while the backend is still answering a first client that left, others
# are served
$n = count();
$t->create(close_after => 0.1);
$t->set_backend(status => 202, delay => 0);
check_accepted($t->create, 'another request while a forward for a gone client runs');
Time::HiRes::sleep(1.6);
is(count(), $n + 2, 'both jobs reached the backend once each');
is_deeply([$t->worker_pids], \@workers, 'still the same workers');

$t->check_log_clean;

done_testing;
