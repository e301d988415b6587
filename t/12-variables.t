#!/usr/bin/perl

# CONTRACT 5 (identity from trusted nginx variables): auth_request with
# auth_request_set, and a plain "set" configuration.  Membership is then
# the backend's call (its 404).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->new;
$t->write_directory;
$t->conf($t->default_conf(
    identity => <<'EOF',
            auth_request /_auth;
            auth_request_set $auth_org $upstream_http_x_org;
            auth_request_set $auth_scopes $upstream_http_x_scopes;
            auth_request_set $auth_gender $upstream_http_x_target_gender;
            influencers_org $auth_org;
            influencers_scopes $auth_scopes;
            influencers_target_gender $auth_gender;
EOF
    server => <<'EOF',
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:%%AUTH_PORT%%/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }
EOF
    http => endpoint_server(port => 'SET', identity => <<'EOF') . <<'EOF',
            set $org $http_x_test_org;
            set $scopes $http_x_test_scopes;
            set $tg $http_x_test_gender;
            influencers_org $org;
            influencers_scopes $scopes;
            influencers_target_gender $tg;
EOF
    server {
        listen 127.0.0.1:%%PORT_FIXED%%;
        influencers_org org_fixed;
        influencers_scopes "influencers:read, influencers:write";
        location ~ ^/v1/projects/[^/]+/influencers$ {
            influencers zone=jobs;
            influencers_backend /_render2;
        }
        location = /_render2 { internal; proxy_pass http://render/jobs; }
    }
EOF
));

# the auth service: org and scopes per key; unknown keys get 200 without
# identity headers (the module then answers 401)
$t->start_backend(name => 'auth', control => {
    status => 200, body => '',
    rules => [
        { header => 'authorization', value => 'Bearer acme-writer',
          headers => { 'X-Org' => 'org_acme', 'X-Scopes' => 'influencers:write',
                       'X-Target-Gender' => 'male' } },
        { header => 'authorization', value => 'Bearer acme-multi',
          headers => { 'X-Org' => 'org_acme',
                       'X-Scopes' => 'projects:read influencers:write' } },
        { header => 'authorization', value => 'Bearer acme-comma',
          headers => { 'X-Org' => 'org_acme',
                       'X-Scopes' => 'projects:read,influencers:write,jobs:read' } },
        { header => 'authorization', value => 'Bearer acme-reader',
          headers => { 'X-Org' => 'org_acme', 'X-Scopes' => 'influencers:read' } },
        { header => 'authorization', value => 'Bearer acme-noscope',
          headers => { 'X-Org' => 'org_acme' } },
        { header => 'authorization', value => 'Bearer nb-project',
          headers => { 'X-Org' => 'org_acme', 'X-Scopes' => 'influencers:write',
                       'X-Target-Gender' => 'non_binary' } },
    ],
});
$t->start_backend;
$t->run;

sub last_job {
    my @r = $t->backend_requests;
    return @r ? json_decode($r[-1]{body}) : undef;
}

sub count { return scalar(my @r = $t->backend_requests); }

# ------------------------------------------------------------ auth_request

my $r = $t->create(auth => 'Bearer acme-writer', project => P_UNKNOWN);
my $j = check_accepted($r, 'auth_request identity: accepted');
my $job = last_job() || {};
is($job->{orgId}, 'org_acme', 'auth_request: orgId from $upstream_http_x_org');
is($job->{projectId}, P_UNKNOWN,
   'auth_request: a project the gateway does not know is forwarded (backend decides)');
is($job->{params}{gender}, 'male', 'auth_request: targetGender male from the variable');

my @auth = $t->backend_requests('auth');
is($auth[-1]{h}{authorization}[0], 'Bearer acme-writer',
   'the auth service saw the Authorization header');
my @fw = $t->backend_requests;
ok(!exists $fw[-1]{h}{authorization}, 'the job forward has no Authorization');

check_error($t->create(auth => 'Bearer someone-else'), 401, 'UNAUTHENTICATED',
            'Missing or invalid API key.', 'auth_request: empty org: 401');
is($t->create(auth => 'Bearer someone-else')->header('www-authenticate'), 'Bearer',
   'auth_request: empty org: WWW-Authenticate: Bearer');
check_error($t->create(key => undef), 401, 'UNAUTHENTICATED', undef,
            'auth_request: no key, empty org: 401');
check_error($t->create(auth => 'Bearer acme-reader'), 403, 'FORBIDDEN_SCOPE',
            'API key lacks the influencers:write scope.',
            'auth_request: scopes without influencers:write: 403');
check_error($t->create(auth => 'Bearer acme-noscope'), 403, 'FORBIDDEN_SCOPE', undef,
            'auth_request: empty scopes: 403');
check_accepted($t->create(auth => 'Bearer acme-multi'),
               'auth_request: space-separated scopes: accepted');
check_accepted($t->create(auth => 'Bearer acme-comma'),
               'auth_request: comma-separated scopes: accepted');
is(last_job()->{params}{gender}, 'female',
   'auth_request: no targetGender: gender female');
$t->create(auth => 'Bearer nb-project');
is(last_job()->{params}{gender}, 'female',
   'auth_request: targetGender non_binary: gender female');
$t->create(auth => 'Bearer nb-project', body => '{"gender":"non_binary"}');
is(last_job()->{params}{gender}, 'non_binary', 'auth_request: gender sent wins');

check_validation($t->create(auth => 'Bearer acme-writer', project => 'bad-id'),
    'Invalid path parameter.', { fieldErrors => { projectId => ['Invalid uuid'] } },
    'auth_request: a malformed projectId is still 422');

$t->set_backend(status => 404);
my $n = count();
check_error($t->create(auth => 'Bearer acme-writer', project => P_UNKNOWN), 404,
            'NOT_FOUND', 'Project not found.',
            'auth_request: the backend says 404: 404 NOT_FOUND');
is(count(), $n + 1, 'auth_request: the membership question went to the backend');
$t->set_backend(status => 202);

# ------------------------------------------------------------ set

my $sp = $t->port('set');
sub via_set {
    my (%h) = @_;
    my @h;
    push @h, 'X-Test-Org' => $h{org} if defined $h{org};
    push @h, 'X-Test-Scopes' => $h{scopes} if defined $h{scopes};
    push @h, 'X-Test-Gender' => $h{gender} if defined $h{gender};
    return $t->create(port => $sp, key => undef, headers => \@h,
                      project => $h{project} // P_GLOBEX,
                      body => $h{body} // '{}');
}

check_accepted(via_set(org => 'org_var', scopes => 'influencers:write'),
               'set identity: accepted without any Authorization');
$job = last_job() || {};
is($job->{orgId}, 'org_var', 'set identity: orgId from the variable');
is($job->{projectId}, P_GLOBEX,
   'set identity: the directory\'s membership does not apply');
is($job->{params}{gender}, 'female', 'set identity: no targetGender: female');

check_error(via_set(scopes => 'influencers:write'), 401, 'UNAUTHENTICATED', undef,
            'set identity: empty org: 401');
check_error(via_set(org => 'org_var'), 403, 'FORBIDDEN_SCOPE', undef,
            'set identity: empty scopes: 403');
check_error(via_set(org => 'org_var', scopes => 'influencers:writer'), 403,
            'FORBIDDEN_SCOPE', undef, 'set identity: a look-alike scope: 403');
check_accepted(via_set(org => 'org_var', scopes => 'a, influencers:write'),
               'set identity: comma and space separated: accepted');

for my $g (qw(female male non_binary any)) {
    via_set(org => 'org_var', scopes => 'influencers:write', gender => $g);
    my $want = $g eq 'male' ? 'male' : 'female';
    is(last_job()->{params}{gender}, $want,
       "set identity: targetGender $g gives gender $want");
}
via_set(org => 'org_var', scopes => 'influencers:write', gender => 'male',
        body => '{"gender":"female","ageRange":"teen"}');
is_deeply(last_job()->{params}, { gender => 'female', ageRange => 'teen' },
          'set identity: body values win');

# an org value with JSON's special characters cannot change the forward
for my $org ('org"},"orgId":"evil', 'org\\x', "org\x{7f}x") {
    my $n = count();
    my $x = via_set(org => $org, scopes => 'influencers:write');
    (my $shown = $org) =~ s/([^\x21-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    if ($x->status == 202) {
        my @all = $t->backend_requests;
        my $fj = json_decode($all[-1]{body});
        ok($fj && ref $fj eq 'HASH', "org '$shown': the forward is valid JSON");
        is($fj && $fj->{orgId}, $org, "org '$shown': orgId is the value, escaped");
        is($fj && join(',', sort keys %$fj),
           'createdAt,influencerId,jobId,kind,orgId,params,projectId,requestId',
           "org '$shown': no injected fields");
    } else {
        is($x->status, 401, "org '$shown': refused as unauthenticated");
        is(count(), $n, "org '$shown': nothing forwarded");
        pass("org '$shown': (no forward to check)");
    }
}

# ------------------------------------------------------------ constants

$r = $t->create(port => $t->port('fixed'), key => undef, project => P_UNKNOWN);
check_accepted($r, 'constant org and scopes at server level: accepted');
is(last_job()->{orgId}, 'org_fixed', 'constant org forwarded');

$t->check_log_clean;

done_testing;
