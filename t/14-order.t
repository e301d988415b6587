#!/usr/bin/perl

# CONTRACT 2: checks run in this order, so each bad request gets one
# predictable answer: method, authentication, scope, projectId format,
# membership, Idempotency-Key format, body size, content type, body.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

my $big = '{"prompt":"x"}' . (' ' x 5000);
my $badjson = '{"name":1,';
my @badkey = ('Idempotency-Key' => 'x' x 300);
my $IKD = { fieldErrors => {
    'Idempotency-Key' => ['Must be 1-255 visible ASCII characters.'] } };
my $PD = { fieldErrors => { projectId => ['Invalid uuid'] } };

# everything wrong at once, then one problem fixed at a time
my %all = (method => 'PUT', key => K_UNKNOWN, project => 'bad-id',
           headers => [@badkey], body => $big, ctype => 'text/plain');

sub step {
    my (%fix) = @_;
    return $t->create(%all, %fix);
}

my $r = step();
is($r->status, 405, 'everything wrong: 405 (method first)');

$all{method} = 'POST';
check_error(step(), 401, 'UNAUTHENTICATED', undef,
            'POST, everything else wrong: 401 (authentication second)');

$all{key} = K_READ;
check_error(step(), 403, 'FORBIDDEN_SCOPE', undef,
            'key without the scope, everything after wrong: 403');

$all{key} = K_WRITE;
check_validation(step(), 'Invalid path parameter.', $PD,
                 'bad projectId, everything after wrong: 422 projectId only');

$all{project} = P_GLOBEX;
check_error(step(), 404, 'NOT_FOUND', 'Project not found.',
            'another org\'s project, everything after wrong: 404');

$all{project} = P_UNKNOWN;
check_error(step(), 404, 'NOT_FOUND', 'Project not found.',
            'unknown project, everything after wrong: 404');

$all{project} = P_FEMALE;
check_validation(step(), 'Invalid Idempotency-Key header.', $IKD,
                 'bad Idempotency-Key, too big, wrong type, bad body: 422 key only');

$all{headers} = [];
check_error(step(), 413, 'PAYLOAD_TOO_LARGE', undef,
            'too big, wrong type: 413 (size before type)');
check_error(step(chunked => 1), 413, 'PAYLOAD_TOO_LARGE', undef,
            'chunked and too big, wrong type: 413 (size before type)');

$all{body} = $badjson;
check_error(step(), 415, 'UNSUPPORTED_MEDIA_TYPE', undef,
            'wrong type, bad body: 415 (type before body)');
check_error(step(chunked => 1), 415, 'UNSUPPORTED_MEDIA_TYPE', undef,
            'chunked, wrong type, bad body: 415');

$all{ctype} = 'application/json';
check_validation(step(), 'Invalid body.', { formErrors => ['Invalid JSON.'] },
                 'only the body wrong: 422 body');

$all{body} = '{}';
check_accepted(step(), 'all fixed: accepted');

# a few more pairs
check_error($t->create(key => undef, project => P_GLOBEX), 401, 'UNAUTHENTICATED',
            undef, 'no key and another org\'s project: 401, not 404');
check_validation($t->create(project => 'x', headers => [@badkey]),
                 'Invalid path parameter.', $PD,
                 'bad projectId and bad Idempotency-Key: 422 projectId only');
check_validation($t->create(headers => ['Idempotency-Key' => 'a', 'Idempotency-Key' => 'b'],
                            body => $big),
                 'Invalid Idempotency-Key header.',
                 { fieldErrors => { 'Idempotency-Key' => ['Must be sent once.'] } },
                 'two Idempotency-Key lines and a big body: 422 key');
check_validation($t->create(headers => [@badkey], body => '{"name":"x"}'),
                 'Invalid Idempotency-Key header.', $IKD,
                 'bad Idempotency-Key and bad body: the body is not validated');

is(scalar(my @b = $t->backend_requests), 1, 'only the accepted request was forwarded');

$t->check_log_clean;

done_testing;
