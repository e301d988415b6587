#!/usr/bin/perl

# CONTRACT 1 (path, projectId, project membership), 2 (404 row).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(http => endpoint_server(port => 'PREFIX',
                                               match => '/v1/'));

my $NOTFOUND = 'Project not found.';

# ------------------------------------------------------------ membership

my $other = $t->create(project => P_GLOBEX);
check_error($other, 404, 'NOT_FOUND', $NOTFOUND, 'project of another org: 404');
my $unknown = $t->create(project => P_UNKNOWN);
check_error($unknown, 404, 'NOT_FOUND', $NOTFOUND, 'unknown project: 404');

is(without_request_id($other->body), without_request_id($unknown->body),
   'another org\'s project and an unknown one: same body but the requestId');
isnt($other->header('x-request-id'), $unknown->header('x-request-id'),
     'the two answers have their own request ids');

sub header_view {
    my ($r) = @_;
    return join "\n", sort map { lc($_->[0]) . ': ' . $_->[1] }
        grep { $_->[0] !~ /^(date|x-request-id)$/i } @{ $r->{lines} };
}
is(header_view($other), header_view($unknown),
   'another org\'s project and an unknown one: same headers');

check_error($t->create(project => uc P_GLOBEX), 404, 'NOT_FOUND', $NOTFOUND,
            'project of another org in uppercase: 404');
check_error($t->create(key => K_GLOBEX, project => P_FEMALE), 404, 'NOT_FOUND',
            $NOTFOUND, 'globex key on an acme project: 404');
check_accepted($t->create(key => K_GLOBEX, project => P_GLOBEX),
               'globex key on its own project: accepted');

# ------------------------------------------------------------ projectId format

my %bad = (
    'not a UUID'                 => 'not-a-uuid',
    '32 hex digits, no dashes'   => '0b5e8f8a6a2c4c1e9d3b1f2e3d4c5b6a',
    'a non-hex letter'           => '0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6g',
    'one digit short'            => '0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6',
    'one digit too many'         => '0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6a0',
    'braces'                     => '{0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6a}',
    'dashes misplaced'           => '0b5e8f8a6-a2c-4c1e-9d3b-1f2e3d4c5b6a',
    'urn prefix'                 => 'urn:uuid:0b5e8f8a-6a2c-4c1e-9d3b-1f2e3d4c5b6a',
    'a number'                   => '12345',
);
for my $name (sort keys %bad) {
    check_validation($t->create(project => $bad{$name}), 'Invalid path parameter.',
        { fieldErrors => { projectId => ['Invalid uuid'] } },
        "projectId $name: 422 fieldErrors.projectId");
}

# a malformed id is reported before membership: never a 404
check_validation($t->create(key => K_GLOBEX, project => 'zzz'),
    'Invalid path parameter.', { fieldErrors => { projectId => ['Invalid uuid'] } },
    'malformed projectId with a key of another org: 422, not 404');

# ------------------------------------------------------------ case

my $r = $t->create(project => uc P_FEMALE);
my $j = check_accepted($r, 'projectId in uppercase: accepted');
my @jobs = $t->backend_requests;
my $fwd = json_decode($jobs[-1]{body});
is($fwd->{projectId}, P_FEMALE, 'uppercase projectId forwarded in lowercase');

(my $mixed = P_MALE) =~ s/([a-f])/uc $1/e;
$r = $t->create(project => $mixed);
check_accepted($r, 'projectId in mixed case: accepted');
@jobs = $t->backend_requests;
$fwd = json_decode($jobs[-1]{body});
is($fwd->{projectId}, P_MALE, 'mixed-case projectId forwarded in lowercase');

# ------------------------------------------------------------ path shape

my $pp = $t->port('prefix');
check_accepted($t->create(port => $pp),
               'prefix location: /v1/projects/{id}/influencers accepted');
for my $path ('/v1/projects/' . P_FEMALE . '/other',
              '/v1/projects/' . P_FEMALE . '/influencers/x',
              '/v1/projects/' . P_FEMALE . '/influencers/',
              '/v1/projects/' . P_FEMALE,
              '/v1/influencers',
              '/v1/')
{
    check_error($t->create(port => $pp, path => $path), 404, 'NOT_FOUND', undef,
                "prefix location: $path is 404 NOT_FOUND");
}
check_error($t->create(port => $pp, path => '/v1/other', key => undef), 401,
            'UNAUTHENTICATED', undef,
            'prefix location: other path without a key is 401 (authentication first)');

$t->check_log_clean;

done_testing;
