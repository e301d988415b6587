#!/usr/bin/perl

# CONTRACT 1 (Content-Type), 2 (415 row), 7 (case-insensitive, parameters,
# charset other than utf-8, whitespace-only bodies, empty body).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

my $U = 'UNSUPPORTED_MEDIA_TYPE';
my $body = '{"gender":"male"}';

# ------------------------------------------------------------ accepted

for my $ct ('application/json',
            'application/json; charset=utf-8',
            'application/json;charset=utf-8',
            'application/json; charset=UTF-8',
            'APPLICATION/JSON',
            'Application/Json; Charset=Utf-8',
            'application/json ; charset=utf-8')
{
    check_accepted($t->create(body => $body, ctype => $ct),
                   "Content-Type '$ct': accepted");
}

# ------------------------------------------------------------ 415

check_error($t->create(body => $body, ctype => undef), 415, $U, undef,
            'a body without Content-Type: 415');
for my $ct ('text/plain',
            'application/x-www-form-urlencoded',
            'application/jsonx',
            'application/json-patch+json',
            'application/problem+json',
            'text/json',
            'json',
            'application',
            'application/json; charset=latin1',
            'application/json; charset=iso-8859-1',
            'application/json; charset=utf-16',
            'multipart/form-data; boundary=x')
{
    check_error($t->create(body => $body, ctype => $ct), 415, $U, undef,
                "Content-Type '$ct': 415");
}

# a chunked body has no Content-Length: the type is still checked
check_error($t->create(body => $body, ctype => 'text/plain', chunked => 1), 415, $U,
            undef, 'a chunked body with text/plain: 415');
check_error($t->create(body => $body, ctype => undef, chunked => 1), 415, $U, undef,
            'a chunked body without Content-Type: 415');
check_error($t->create(body => ' ', ctype => undef, chunked => 1), 415, $U, undef,
            'a chunked whitespace-only body without Content-Type: 415');
check_accepted($t->create(body => $body, chunked => [5, 100]),
               'a chunked body with application/json: accepted');
check_accepted($t->create(body => '', ctype => undef, chunked => 1),
               'an empty chunked body without Content-Type: accepted');

# ------------------------------------------------------------ empty bodies

check_accepted($t->create(body => '', ctype => undef),
               'an empty body without Content-Type: accepted');
check_accepted($t->create(body => undef, ctype => undef),
               'no body at all (no Content-Length): accepted');
check_accepted($t->create(body => '', ctype => 'text/plain'),
               'an empty body with text/plain: accepted (type only matters with a body)');
check_accepted($t->create(body => '', ctype => 'application/json'),
               'an empty body with application/json: accepted');

# whitespace only is not empty
check_error($t->create(body => "  \n", ctype => undef), 415, $U, undef,
            'a whitespace-only body without Content-Type: 415');
check_error($t->create(body => ' ', ctype => 'text/plain'), 415, $U, undef,
            'a one-space body with text/plain: 415');
check_validation($t->create(body => "  \n\t", ctype => 'application/json'),
                 'Invalid body.', { formErrors => ['Invalid JSON.'] },
                 'a whitespace-only body with application/json: 422 Invalid JSON.');

# the type is checked before the body
check_error($t->create(body => 'not json at all', ctype => 'text/plain'), 415, $U,
            undef, 'invalid JSON sent as text/plain: 415 (type before body)');
check_error($t->create(body => '{"name":"x"}', ctype => undef), 415, $U, undef,
            'an invalid body without Content-Type: 415');

is(scalar(my @b = $t->backend_requests), 13, 'only the accepted requests were forwarded');

$t->check_log_clean;

done_testing;
