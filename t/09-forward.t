#!/usr/bin/perl

# CONTRACT 4 (the job and its forward), 1 (defaults when omitted), 7
# (createdAt, prompt forwarded exactly): what the backend receives.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

# one request with everything a partner might add
my $body = '{"gender":"non_binary","ageRange":"mature",'
         . '"prompt":"soft librarian energy \u00e9\u2014\ud83d\ude00"}';
my $before = int(Time::HiRes::time() * 1000);
my $r = $t->http(POST => '/v1/projects/' . uc(P_MALE) . '/influencers', [
    'Authorization'   => 'Bearer ' . K_WRITE,
    'Content-Type'    => 'application/json; charset=utf-8',
    'Idempotency-Key' => 'partner-key-123',
    'User-Agent'      => 'partner-sdk/1.0',
    'Accept'          => 'application/json',
    'X-Request-Id'    => 'req_' . ('1' x 32),
    'X-Custom'        => 'secret-custom',
    'Cookie'          => 'session=abc',
    'X-Forwarded-For' => '203.0.113.9',
    'Accept-Encoding' => 'gzip',
], $body);
my $after = int(Time::HiRes::time() * 1000);
my $j = check_accepted($r, 'a request with extra headers: accepted') || {};
my $rid = $r->header('x-request-id') // '';

my @req = $t->backend_requests;
is(scalar @req, 1, 'exactly one request reached the backend');
my $f = $req[0] || { h => {}, headers => [], body => '' };

# ------------------------------------------------------------ request line, headers

is($f->{method}, 'POST', 'forward: method POST');
is($f->{uri}, '/jobs', 'forward: the proxy_pass URI');
is_deeply($f->{h}{'content-type'}, ['application/json'],
          'forward: Content-Type: application/json');
is_deeply($f->{h}{'x-request-id'}, [$rid],
          'forward: X-Request-Id equals the answer\'s');
is_deeply($f->{h}{'idempotency-key'}, [$j->{jobId}],
          'forward: Idempotency-Key is the jobId (one line)');
is_deeply($f->{h}{'content-length'}, [length $f->{body}],
          'forward: Content-Length is the body length');
ok(!exists $f->{h}{authorization}, 'forward: no Authorization');
ok(!exists $f->{h}{'user-agent'}, 'forward: no User-Agent');
ok(!exists $f->{h}{'x-custom'}, 'forward: no custom header');
ok(!exists $f->{h}{cookie}, 'forward: no Cookie');
ok(!exists $f->{h}{accept}, 'forward: no Accept');
ok(!exists $f->{h}{'accept-encoding'}, 'forward: no Accept-Encoding');
ok(!exists $f->{h}{'x-forwarded-for'}, 'forward: no X-Forwarded-For');
ok(!exists $f->{h}{'transfer-encoding'}, 'forward: not chunked');
my %allowed = map { $_ => 1 } qw(host connection content-type content-length
                                 x-request-id idempotency-key);
my @extra = grep { !$allowed{$_} } map { lc $_->[0] } @{ $f->{headers} };
is("@extra", '', 'forward: no header beyond Host, Connection, Content-Type, '
   . 'Content-Length, X-Request-Id, Idempotency-Key');
unlike(join("\n", map { "$_->[0]: $_->[1]" } @{ $f->{headers} }) . $f->{body},
       qr/partner-key-123|secret-custom|session=abc|\Q${\K_WRITE}\E/,
       'forward: nothing of the partner\'s headers or key anywhere');

# ------------------------------------------------------------ body

like($f->{body},
     qr/^\{"jobId":"job_[0-9A-Z]{26}","kind":"influencer_create","influencerId":"inf_[0-9a-f]{32}","projectId":"[0-9a-f-]{36}","orgId":"[^"]*","requestId":"req_[0-9a-f]{32}","createdAt":"[^"]*","params":\{"gender":"[^"]*","ageRange":"[^"]*","prompt":"(?:[^"\\]|\\.)*"\}\}$/,
     'forward: body keys in the contract\'s order')
    or diag $f->{body};

my $job = json_decode($f->{body}) || {};
is($job->{jobId}, $j->{jobId}, 'forward: jobId equals the answer\'s');
like($job->{jobId} // '', qr/^job_${\ULID_RE}$/, 'forward: jobId is a ULID');
is($job->{kind}, 'influencer_create', 'forward: kind');
is($job->{influencerId}, $j->{influencerId}, 'forward: influencerId equals the answer\'s');
is($job->{projectId}, P_MALE, 'forward: projectId in lowercase');
is($job->{orgId}, 'org_acme', 'forward: orgId is the key\'s org');
is($job->{requestId}, $rid, 'forward: requestId equals X-Request-Id');
like($job->{createdAt} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
     'forward: createdAt is UTC with three fractional digits and Z');
is($job->{createdAt}, iso_ms(ulid_ms($j->{jobId} // '')),
   'forward: createdAt equals the jobId\'s ULID time');
my $ms = ulid_ms($j->{jobId} // '') // 0;
ok($ms >= $before - 5 && $ms <= $after + 5, 'forward: createdAt is now')
    or diag("$ms not in [$before, $after]");
is_deeply($job->{params},
          { gender => 'non_binary', ageRange => 'mature',
            prompt => "soft librarian energy \x{e9}\x{2014}\x{1f600}" },
          'forward: params as sent, the prompt decoded equal');
is(join(',', sort keys %$job),
   'createdAt,influencerId,jobId,kind,orgId,params,projectId,requestId',
   'forward: no other fields');

# ------------------------------------------------------------ defaults

sub params_for {
    my (%o) = @_;
    my $n = scalar(my @x = $t->backend_requests);
    my $x = $t->create(%o);
    return undef unless $x->status == 202;
    my @all = $t->backend_requests;
    return undef unless @all == $n + 1;
    my $d = json_decode($all[-1]{body});
    return $d ? $d->{params} : undef;
}

my %gender_default = (
    P_FEMALE() => ['female', 'targetGender female'],
    P_MALE()   => ['male', 'targetGender male'],
    P_NB()     => ['female', 'targetGender non_binary'],
    P_ANY()    => ['female', 'targetGender any'],
    P_NONE()   => ['female', 'no targetGender'],
);
for my $p (sort keys %gender_default) {
    my ($g, $why) = @{ $gender_default{$p} };
    is_deeply(params_for(project => $p, body => '{}'),
              { gender => $g, ageRange => 'young_adult' },
              "defaults for a project with $why: gender $g, ageRange young_adult");
    is_deeply(params_for(project => $p, body => ''),
              { gender => $g, ageRange => 'young_adult' },
              "empty body, project with $why: the same as {}");
}
is_deeply(params_for(project => P_GLOBEX, key => K_GLOBEX, body => '{}'),
          { gender => 'male', ageRange => 'young_adult' },
          'defaults for another org\'s project (targetGender male)');

is_deeply(params_for(project => P_MALE, body => '{"gender":"female"}'),
          { gender => 'female', ageRange => 'young_adult' },
          'gender sent wins over targetGender male');
is_deeply(params_for(project => P_FEMALE, body => '{"gender":"non_binary"}'),
          { gender => 'non_binary', ageRange => 'young_adult' },
          'gender non_binary sent wins over targetGender female');
is_deeply(params_for(project => P_NB, body => '{"ageRange":"senior"}'),
          { gender => 'female', ageRange => 'senior' },
          'ageRange sent, gender from the default chain');
is_deeply(params_for(body => '{"ageRange":"young_adult"}'),
          { gender => 'female', ageRange => 'young_adult' },
          'ageRange sent with its default value');

my $p = params_for(body => '{}');
ok($p && !exists $p->{prompt}, 'no prompt sent: no prompt forwarded');
$p = params_for(body => '{"prompt":"' . ('a' x 59) . '\u00e9"}');
is($p && $p->{prompt}, ('a' x 59) . "\x{e9}", 'a 60-character prompt forwarded exactly');

# each job has its own ids; the forward's X-Request-Id follows each answer
my $x1 = $t->create;
my $x2 = $t->create;
@req = $t->backend_requests;
is_deeply([ map { $_->{h}{'x-request-id'}[0] } @req[-2, -1] ],
          [ map { $_->header('x-request-id') } $x1, $x2 ],
          'two requests: each forward carries its own answer\'s X-Request-Id');
isnt($x1->json->{influencerId}, $x2->json->{influencerId},
     'two requests: two influencerIds');

$t->check_log_clean;

# ------------------------------------------------------------ headers as variables

# The backend location may read the forward's headers as variables
# (proxy_set_header, log_format).  Since nginx 1.23.0 a header line is also
# a link of a list (its "next"), which every line the module writes must
# end; nginx started with MALLOC_PERTURB_ gets memory that is never zero,
# so a line left unterminated crashes the worker, or adds junk, here.
{
    local $ENV{MALLOC_PERTURB_} = 165;
    my $v = InfTest->setup(render => "proxy_set_header X-Seen-Type \$content_type;\n"
                                   . "proxy_set_header X-Seen-Id \$http_x_request_id;");
    my $x = $v->create(body => '{}');
    check_accepted($x, 'the backend location reads the forward\'s headers: 202');
    my @fw = $v->wait_backend_requests(1);
    my $h = @fw ? $fw[0]{h} : {};
    is_deeply($h->{'x-seen-type'}, ['application/json'],
              '$content_type in the backend location: the forward\'s');
    is_deeply($h->{'x-seen-id'}, [$x->header('x-request-id')],
              '$http_x_request_id in the backend location: the forward\'s');
    $v->check_log_clean;
}

done_testing;
