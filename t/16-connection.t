#!/usr/bin/perl

# How partners really connect: keepalive connections mixing rejected and
# accepted requests, bodies that arrive late, Expect: 100-continue,
# HTTP/1.0, several clients at once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(server => 'client_body_timeout 1s;');

sub count { return scalar(my @r = $t->backend_requests); }

sub args { return [ $t->create_args(@_) ] }

# ------------------------------------------------------------ keepalive

my @rs = $t->session(args(), args(body => '{"gender":"male"}'), args());
is_deeply([map { $_->status } @rs], [202, 202, 202],
          'three jobs on one keepalive connection: 202 each');
my %ids = map { ($_->json || {})->{jobId} // '' => 1 } @rs;
is(scalar keys %ids, 3, 'three jobs on one connection: three jobIds');

my @before = (
    [401, 'an unknown key with a body', args(key => K_UNKNOWN, body => '{"prompt":"x"}')],
    [403, 'a key without the scope, with a body', args(key => K_READ, body => '{"prompt":"x"}')],
    [404, 'another org\'s project, with a body', args(project => P_GLOBEX, body => '{"prompt":"x"}')],
    [405, 'PUT with a body', args(method => 'PUT', body => '{"prompt":"x"}')],
    [422, 'a bad projectId, with a body', args(project => 'x', body => '{"prompt":"x"}')],
    [422, 'a bad Idempotency-Key, with a body',
          args(headers => ['Idempotency-Key' => ''], body => '{"prompt":"x"}')],
    [415, 'text/plain', args(ctype => 'text/plain', body => '{"prompt":"x"}')],
    [422, 'an invalid body', args(body => '{"name":"x"}')],
    [401, 'an unknown key with a chunked body',
          args(key => K_UNKNOWN, body => '{"prompt":"x"}', chunked => [3, 4])],
    [415, 'text/plain, chunked', args(ctype => 'text/plain', body => '{}', chunked => 1)],
    [422, 'an invalid chunked body', args(body => '{"x":1}', chunked => [2, 2, 3])],
);
for my $case (@before) {
    my ($status, $what, $req) = @$case;
    my $n = count();
    @rs = $t->session($req, args(body => '{"prompt":"after"}'));
    is($rs[0] && $rs[0]->status, $status, "keepalive: $what: $status");
    is($rs[1] && $rs[1]->status, 202, "keepalive: $what, then a good request: 202")
        or diag($rs[1] ? $rs[1]->summary : 'no second answer');
    my @req = $t->backend_requests;
    is(scalar @req, $n + 1, "keepalive: $what: one job forwarded");
    is(json_decode($req[-1]{body} // '') && json_decode($req[-1]{body})->{params}{prompt},
       'after', "keepalive: $what: the second request's body was the one read");
}

# 413 with the body on the wire: nginx may close; if it keeps the
# connection, the next request must be read right
@rs = $t->session(args(body => '{"prompt":"x"}' . (' ' x 5000)),
                  args(body => '{"prompt":"after"}'));
is($rs[0]->status, 413, 'keepalive: a body over the limit: 413');
if (@rs > 1) {
    is($rs[1]->status, 202, 'keepalive: after a 413 on a kept connection: 202');
} else {
    like($rs[0]->header('connection') // '', qr/close/i,
         'keepalive: after a 413 the connection is closed');
}

# ------------------------------------------------------------ late bodies

my $n = count();
my $r = $t->create(body => '{"prompt":"' . ('s' x 50) . '","gender":"male"}',
                   pause => 0.3);
check_accepted($r, 'a body arriving in two pieces 0.3 s apart: accepted');
my @req = $t->backend_requests;
is_deeply(json_decode($req[-1]{body})->{params},
          { gender => 'male', ageRange => 'young_adult', prompt => 's' x 50 },
          'a late body: forwarded whole');

$r = $t->create(body => '{"prompt":"late chunked"}', chunked => [5, 5, 100],
                pause => 0.3);
check_accepted($r, 'a chunked body arriving late: accepted');
$r = $t->create(body => '{"prompt":"x"}' . (' ' x 5000), chunked => [3000, 3000],
                pause => 0.3);
check_error($r, 413, 'PAYLOAD_TOO_LARGE', undef, 'a chunked body arriving late, too big: 413');
$r = $t->create(body => '{"name":"late"}', pause => 0.3);
check_validation($r, 'Invalid body.',
    { fieldErrors => { name => ["Unrecognized key \x{2014} name is server-generated."] } },
    'a late invalid body: 422');

# a body that never comes: nginx times out (client_body_timeout 1s)
$n = count();
my @workers = $t->worker_pids;
$r = $t->create(body => '{"pro', headers => ['Content-Length' => 100],
                no_content_length => 1, timeout => 3);
ok($r->status == 0 || $r->status == 408 || $r->status >= 400,
   'a body that never comes: no acceptance') or diag $r->summary;
is(count(), $n, 'a body that never comes: nothing forwarded');
is_deeply([$t->worker_pids], \@workers, 'a body that never comes: no worker died');

# ------------------------------------------------------------ protocol variants

$r = $t->raw("POST /v1/projects/" . P_FEMALE . "/influencers HTTP/1.0\r\n"
             . 'Authorization: Bearer ' . K_WRITE . "\r\n"
             . "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
check_accepted($r, 'HTTP/1.0 request: accepted');

$r = $t->create(headers => ['Expect' => '100-continue'],
                body => '{"prompt":"expecting"}' . (' ' x 1500));
check_accepted($r, 'Expect: 100-continue with a body: accepted');
$r = $t->create(headers => ['Expect' => '100-continue'], key => K_UNKNOWN,
                body => '{}');
is($r->status, 401, 'Expect: 100-continue with an unknown key: 401');

# ------------------------------------------------------------ several clients at once

my $clients = 4;
my $each = 10;
$n = count();
my $kids = $t->fork_clients('client', $clients, sub {
    my ($c) = @_;
    my @lines;
    for my $i (1 .. $each) {
        my $x = $t->create(body => qq({"prompt":"client $c job $i"}));
        push @lines, $x->status . ' ' . (($x->json || {})->{jobId} // '-');
    }
    return join("\n", @lines) . "\n";
});
InfTest::reap($kids, Time::HiRes::time() + 20, 0.05);
my @results = map { split /\n/, ($t->read_file("client-$_.txt") // '') } 1 .. $clients;
is(scalar @results, $clients * $each, "$clients clients x $each requests: all answered");
is(scalar(grep { !/^202 job_/ } @results), 0, 'concurrent requests: all 202');
my %u;
$u{(split / /)[1]}++ for @results;
is(scalar keys %u, $clients * $each, 'concurrent requests: unique jobIds');
@req = $t->backend_requests;
is(scalar @req, $n + $clients * $each, 'concurrent requests: one forward each');
my %prompts = map { json_decode($_->{body})->{params}{prompt} => 1 } @req[$n .. $#req];
is(scalar keys %prompts, $clients * $each, 'concurrent requests: each forward its own body');

$t->check_log_clean;

done_testing;
