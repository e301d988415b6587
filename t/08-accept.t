#!/usr/bin/perl

# CONTRACT 2 (the 202 envelope, ids, Location, Retry-After, X-Request-Id)
# and the reference page's own requests.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(http =>
    endpoint_server(port => 'RA7', error_page => '', keepalive => 0,
                    location => 'influencers_retry_after 7s;')
    . endpoint_server(port => 'RA120', error_page => '', keepalive => 0,
                      top => 'influencers_retry_after 2m;'));

# ------------------------------------------------------------ the reference page

# the curl example, as a shell sends it: the -d text with its newlines and
# indentation, plus curl's own User-Agent and Accept
my $seed_body = qq({\n    "gender": "female",\n    "ageRange": "young_adult",\n)
              . qq(    "prompt": "barista energy, soft morning light"\n  });
my $before = int(Time::HiRes::time() * 1000);
my $r = $t->http(POST => '/v1/projects/' . P_MALE . '/influencers', [
    'User-Agent'      => 'curl/7.88.1',
    'Accept'          => '*/*',
    'Authorization'   => 'Bearer ' . K_WRITE,
    'Content-Type'    => 'application/json',
    'Idempotency-Key' => '8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55',
], $seed_body);
my $after = int(Time::HiRes::time() * 1000);
my $j = check_accepted($r, 'the reference page\'s curl request: 202 envelope');

my @req = $t->backend_requests;
is(scalar @req, 1, 'the reference request: one job forwarded');
my $fwd = json_decode($req[-1]{body} // '');
is_deeply($fwd && $fwd->{params},
          { gender => 'female', ageRange => 'young_adult',
            prompt => 'barista energy, soft morning light' },
          'the reference request: params forwarded as sent');
is($fwd && $fwd->{jobId}, $j && $j->{jobId}, 'the reference request: same jobId');

my $ms = ulid_ms($j ? $j->{jobId} : '');
ok(defined $ms && $ms >= $before - 5 && $ms <= $after + 5,
   'jobId ULID time is the time of the request')
    or diag("ulid $ms, request between $before and $after");

# the page's TypeScript (fetch) and Python (httpx) examples
my %variants = (
    'TypeScript fetch' => [
        [ 'content-type' => 'application/json', 'authorization' => 'Bearer ' . K_WRITE,
          'idempotency-key' => '3b241101-e2bb-4255-8caf-4136c566a962',
          'accept' => '*/*', 'accept-language' => '*', 'sec-fetch-mode' => 'cors',
          'user-agent' => 'node', 'accept-encoding' => 'gzip, deflate' ],
        '{"gender":"female","ageRange":"young_adult","prompt":"barista energy, soft morning light"}' ],
    'Python httpx' => [
        [ 'Accept' => '*/*', 'Accept-Encoding' => 'gzip, deflate',
          'User-Agent' => 'python-httpx/0.27.0', 'Authorization' => 'Bearer ' . K_WRITE,
          'Content-Type' => 'application/json',
          'Idempotency-Key' => 'f47ac10b-58cc-4372-a567-0e02b2c3d479' ],
        '{"gender": "female", "ageRange": "young_adult", "prompt": "barista energy, soft morning light"}' ],
);
for my $v (sort keys %variants) {
    my ($h, $b) = @{ $variants{$v} };
    my $x = $t->http(POST => '/v1/projects/' . P_FEMALE . '/influencers', $h, $b);
    check_accepted($x, "the reference page's $v example: 202 envelope");
    my @all = $t->backend_requests;
    is_deeply((json_decode($all[-1]{body} // '') || {})->{params},
              { gender => 'female', ageRange => 'young_adult',
                prompt => 'barista energy, soft morning light' },
              "the reference page's $v example: params forwarded");
}

# "You can also send an empty body": curl -X POST with the key only
$r = $t->http(POST => '/v1/projects/' . P_MALE . '/influencers', [
    'User-Agent'    => 'curl/7.88.1',
    'Accept'        => '*/*',
    'Authorization' => 'Bearer ' . K_WRITE,
]);
check_accepted($r, 'the reference page\'s empty-body request: 202 envelope');
@req = $t->backend_requests;
$fwd = json_decode($req[-1]{body} // '');
is_deeply($fwd && $fwd->{params}, { gender => 'male', ageRange => 'young_adult' },
          'the empty-body request: project defaults forwarded');

# the page's 422 example
$r = $t->create(body => '{"name":"Ava"}');
check_validation($r, 'Invalid body.',
    { fieldErrors => { name => ["Unrecognized key \x{2014} name is server-generated."] } },
    'the reference page\'s 422 example');

# ids are server-generated
check_validation($t->create(body => '{"jobId":"job_01HXZ9G7KMV2QX8Y1S5RJW3B7T"}'),
    'Invalid body.', { fieldErrors => { jobId => ['Unrecognized key.'] } },
    'a client-supplied jobId is refused');

# ------------------------------------------------------------ X-Request-Id

my $mine = 'req_' . ('0' x 32);
$r = $t->create(headers => ['X-Request-Id' => $mine]);
my $rid = $r->header('x-request-id') // '';
like($rid, qr/^${\REQID_RE}$/, 'X-Request-Id sent by the client: a fresh one answered');
isnt($rid, $mine, 'the client\'s X-Request-Id is not reused');
is(scalar(my @x = $r->headers('x-request-id')), 1, 'only one X-Request-Id in the answer');
@req = $t->backend_requests;
is_deeply($req[-1]{h}{'x-request-id'}, [$rid],
          'the forward carries the answer\'s X-Request-Id, not the client\'s');

$r = $t->create(headers => ['X-Request-Id' => 'evil"value']);
like($r->header('x-request-id') // '', qr/^${\REQID_RE}$/,
     'a malformed client X-Request-Id: a fresh one answered');

$r = $t->create(key => undef, headers => ['X-Request-Id' => $mine]);
isnt($r->json && $r->json->{error}{requestId}, $mine,
     'an error answer does not reuse the client\'s X-Request-Id');

# ------------------------------------------------------------ Retry-After

check_accepted($t->create(port => $t->port('ra7')), 'influencers_retry_after 7s',
               retry_after => 7);
check_accepted($t->create(port => $t->port('ra120')),
               'influencers_retry_after 2m at server level', retry_after => 120);

# ------------------------------------------------------------ 100 jobs

my (@jobs, @infs, @rids, @envelopes);
my $bad = 0;
for my $i (1 .. 100) {
    my $x = $t->create(body => '{}');
    if ($x->status != 202 || !$x->json) {
        $bad++;
        diag($x->summary) if $bad < 3;
        next;
    }
    push @jobs, $x->json->{jobId};
    push @infs, $x->json->{influencerId};
    push @rids, $x->header('x-request-id');
    push @envelopes, $x->body;
}
is($bad, 0, '100 sequential requests: all 202');
my %u;
is(scalar(grep { !$u{$_}++ } @jobs), scalar @jobs, '100 jobIds are unique');
%u = ();
is(scalar(grep { !$u{$_}++ } @infs), scalar @infs, '100 influencerIds are unique');
%u = ();
is(scalar(grep { !$u{$_}++ } @rids), scalar @rids, '100 X-Request-Ids are unique');
is(scalar(grep { $_ !~ ACCEPT_RE } @envelopes), 0, '100 envelopes have the exact shape');

my @times = map { ulid_ms($_) } @jobs;
is_deeply([sort { $a <=> $b } @times], \@times,
          'ULID times of sequential jobs never go backwards');
is_deeply([sort @jobs], \@jobs,
          'jobIds of sequential requests sort in creation order');

# all answers have distinct request ids, also across workers
is(scalar(my @w = $t->worker_pids), 2, '(two workers served them)');

# the random parts look random: not all the same character
my %chars;
$chars{$_}++ for map { split //, substr($_, 14) } @jobs;
cmp_ok(scalar keys %chars, '>', 20, 'ULID random parts use the whole alphabet');
%chars = ();
$chars{$_}++ for map { split //, substr($_, 4) } @infs;
is(scalar keys %chars, 16, 'influencerIds use all 16 hex digits');

$t->check_log_clean;

done_testing;
