#!/usr/bin/perl

# CONTRACT 1 (method), 2 (405 row), 7 (TRACE refused by nginx gets JSON);
# influencers_other_methods 405 | @named.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(http => endpoint_server(port => 'OTHER',
        location => 'influencers_other_methods @other;',
        server => 'location @other { return 200 "other $request_method\\n"; }')
    . endpoint_server(port => 'EXPLICIT', render => '/_render3',
                      location => 'influencers_other_methods 405;'));

my $path = '/v1/projects/' . P_FEMALE . '/influencers';

for my $m (qw(GET PUT DELETE PATCH OPTIONS)) {
    my $body = $m =~ /^(PUT|PATCH)$/ ? '{}' : undef;
    my $r = $t->create(method => $m, body => $body);
    check_error($r, 405, 'METHOD_NOT_ALLOWED', 'Method not allowed.',
                "$m with a valid key: 405 JSON");
    is($r->header('allow'), 'POST', "$m: Allow: POST");
}

# the method is checked first: before authentication
my $r = $t->create(method => 'GET', key => undef, body => undef);
check_error($r, 405, 'METHOD_NOT_ALLOWED', 'Method not allowed.',
            'GET without Authorization: 405, not 401');
is($r->header('allow'), 'POST', 'GET without Authorization: Allow: POST');
ok(!defined $r->header('www-authenticate'),
   'GET without Authorization: no WWW-Authenticate');

$r = $t->create(method => 'DELETE', key => K_UNKNOWN, body => undef,
                project => 'not-a-uuid');
is($r->status, 405, 'DELETE with a bad key and a bad projectId: 405 first');

# HEAD: 405 without a body
$r = $t->create(method => 'HEAD', body => undef);
is($r->status, 405, 'HEAD: 405');
is($r->header('allow'), 'POST', 'HEAD: Allow: POST');
like($r->header('x-request-id') // '', qr/^${\REQID_RE}$/, 'HEAD: X-Request-Id');
is($r->body, '', 'HEAD: no body');

# TRACE is refused by nginx before any module code: JSON via influencers_errors
$r = $t->http(TRACE => $path, [Authorization => 'Bearer ' . K_WRITE]);
check_error($r, 405, 'METHOD_NOT_ALLOWED', undef,
            'TRACE (refused by nginx): 405 JSON from influencers_errors');
is($r->header('allow'), 'POST', 'TRACE: Allow: POST');

# lowercase "post" is another method
$r = $t->raw("post $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             . "Authorization: Bearer " . K_WRITE . "\r\n\r\n");
isnt($r->status, 202, 'lowercase "post" is not POST') or diag $r->summary;

is(scalar(my @b = $t->backend_requests), 0, 'no job forwarded for other methods');

# influencers_other_methods 405, explicitly
$r = $t->create(method => 'GET', body => undef, port => $t->port('explicit'));
check_error($r, 405, 'METHOD_NOT_ALLOWED', 'Method not allowed.',
            'influencers_other_methods 405: GET gets 405');
is($r->header('allow'), 'POST', 'influencers_other_methods 405: Allow: POST');

# influencers_other_methods @named: other methods are handed over
for my $m (qw(GET DELETE PUT)) {
    $r = $t->create(method => $m, body => ($m eq 'PUT' ? '{}' : undef),
                    port => $t->port('other'));
    is($r->status, 200, "influencers_other_methods \@other: $m handed over");
    is($r->body, "other $m\n", "influencers_other_methods \@other: $m body");
}
$r = $t->create(method => 'GET', key => undef, body => undef,
                port => $t->port('other'));
is($r->body, "other GET\n",
   'influencers_other_methods @other: handed over before authentication');

$r = $t->create(port => $t->port('other'));
check_accepted($r, 'influencers_other_methods @other: POST still creates the job');

$t->check_log_clean;

done_testing;
