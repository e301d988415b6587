#!/usr/bin/perl

# CONTRACT 3 and 7 (idempotency): what one (org, Idempotency-Key) means.
# The scope of a key, the fingerprint (method, path, the body's meaning),
# what a replay carries, a reused key, a key in flight, requests without a
# key, and the quoted form of a key.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $TTL = 600;

my $t = InfTest->new(log_level => 'info');
$t->write_directory;
$t->conf($t->default_conf(
    zone     => "zone=jobs:1m ttl=${TTL}s",
    location => "influencers_retry_after 7s;\n"
              . "            influencers_busy_retry_after 3s;",
    server   => STATS_LOCATION,
    # a second server on the same zone whose org comes from a header: the
    # same path, body and key from two orgs
    http     => endpoint_server(port => 'VAR',
        identity => 'influencers_org $http_x_test_org;',
        location => "influencers_scopes \"influencers:write\";\n"
                  . '            influencers_retry_after 7s;'),
));
$t->start_backend;
$t->run;

# ---------------------------------------------------------------- helpers

# the jobIds the backend was sent (its Idempotency-Key header)
sub forwarded_jobs {
    return map { $_->{h}{'idempotency-key'}[0] // '' } $t->backend_requests;
}

# a first answer (check_new_job) with this server's Retry-After: its jobId
sub check_new {
    my ($r, $name, %o) = @_;
    my $j = check_new_job($r, $name, retry_after => $o{retry_after} // 7);
    return $j->{jobId} // '';
}

sub reused {
    my ($r, $name) = @_;
    check_error($r, 422, 'IDEMPOTENCY_KEY_REUSED', undef, $name);
}

# ------------------------------------------------------------ a replay

{
    my $n0 = $t->forwards();
    my $first = $t->idem('replay-1', body => '{"gender":"male","prompt":"barista energy"}');
    my $job = check_new($first, 'first request with a key: 202');
    is($t->forwards(), $n0 + 1, 'the first request is forwarded');
    is(($t->backend_requests)[-1]{h}{'idempotency-key'}[0], $job,
       'the forward carries the jobId');
    is($first->header('retry-after'), 7, 'Retry-After from influencers_retry_after');

    # Idempotency-Expires: an HTTP date, about ttl from now
    my $exp = http_date($first->header('idempotency-expires'));
    ok(defined $exp, 'Idempotency-Expires is an HTTP date')
        or diag($first->header('idempotency-expires') // '(none)');
    my $in = ($exp // 0) - time;
    ok($in >= $TTL - 5 && $in <= $TTL + 2, "Idempotency-Expires is ttl ($TTL s) ahead")
        or diag("expires in $in s");

    for my $i (1 .. 3) {
        my $r = $t->idem('replay-1', body => '{"gender":"male","prompt":"barista energy"}');
        check_replay($r, $first, "replay $i: the first answer again");
    }
    is($t->forwards(), $n0 + 1, 'replays are not forwarded');
}

# ------------------------------------------------------------ scope (org, key)

{
    my $n0 = $t->forwards();
    my $acme = $t->idem('org-shared-1');
    my $globex = $t->idem('org-shared-1', key => K_GLOBEX, project => P_GLOBEX);
    my $j1 = check_new($acme, 'org_acme with key org-shared-1: 202');
    my $j2 = check_new($globex, 'org_globex with the same key: 202, not a reuse');
    isnt($j1, $j2, 'two orgs, one key: two jobs');
    is($t->forwards(), $n0 + 2, 'both forwarded');
    check_replay($t->idem('org-shared-1'), $acme, 'org_acme replays its own job');
    check_replay($t->idem('org-shared-1', key => K_GLOBEX, project => P_GLOBEX),
                 $globex, 'org_globex replays its own job');

    # the same path, body and key, only the org differs (org from a header)
    my $va = $t->idem('org-shared-2', port => $t->port('var'),
                  headers => ['X-Test-Org' => 'org_alpha']);
    my $vb = $t->idem('org-shared-2', port => $t->port('var'),
                  headers => ['X-Test-Org' => 'org_beta']);
    my $ja = check_new($va, 'org_alpha, key org-shared-2: 202');
    my $jb = check_new($vb, 'org_beta, same path, body and key: 202');
    isnt($ja, $jb, 'same request from two orgs: two jobs');
    check_replay($t->idem('org-shared-2', port => $t->port('var'),
                      headers => ['X-Test-Org' => 'org_beta']),
                 $vb, 'org_beta replays its own job');
    check_replay($t->idem('org-shared-2', port => $t->port('var'),
                      headers => ['X-Test-Org' => 'org_alpha']),
                 $va, 'org_alpha replays its own job');
    is($t->forwards(), $n0 + 4, 'four jobs forwarded, replays not');

    # two API keys of one org share the cache
    my $w = $t->idem('org-shared-3');
    check_new($w, 'org_acme key K_WRITE: 202');
    check_replay($t->idem('org-shared-3', key => K_MULTI), $w,
                 'another key of org_acme with the same Idempotency-Key: a replay');
    # and so does the org whatever its identity source
    check_replay($t->idem('org-shared-3', port => $t->port('var'),
                      headers => ['X-Test-Org' => 'org_acme']), $w,
                 'org_acme through the variable-identity server: a replay');
}

# ------------------------------------------------------------ fingerprint

{
    my $n0 = $t->forwards();
    my $f = $t->idem('fp-order', body => '{"gender":"male","ageRange":"adult","prompt":"x y"}');
    check_new($f, 'fp-order: 202');
    check_replay($t->idem('fp-order', body => '{"prompt":"x y","ageRange":"adult","gender":"male"}'),
                 $f, 'keys in another order: the same request');
    check_replay($t->idem('fp-order', body => qq[ {\n\t"ageRange" : "adult" ,\r\n  "prompt":"x y",  "gender":"male"}\n ]),
                 $f, 'extra whitespace: the same request');
    check_replay($t->idem('fp-order', body => '{"gend\u0065r":"male","ageRange":"adult","prompt":"x\u0020y"}'),
                 $f, 'escaped key and value characters: the same request');
    is($t->forwards(), $n0 + 1, 'one forward for all of them');

    my $u = $t->idem('fp-utf8', body => qq[{"prompt":"caf\xc3\xa9 \xe2\x80\x94 a/b"}]);
    check_new($u, 'fp-utf8: 202');
    check_replay($t->idem('fp-utf8', body => '{"prompt":"caf\u00e9 \u2014 a\/b"}'),
                 $u, '\\u escapes and \\/ mean the same string: the same request');
    check_replay($t->idem('fp-utf8', body => '{"prompt":"caf\u00E9 \u2014 a/b"}'),
                 $u, 'uppercase hex in an escape: the same request');

    # how the body travels does not matter: chunked is the same request
    my $ch = $t->idem('fp-chunked', body => '{"prompt":"chunked body","gender":"male"}');
    check_new($ch, 'fp-chunked: 202');
    check_replay($t->idem('fp-chunked', body => '{"prompt":"chunked body","gender":"male"}',
                      chunked => [5, 7, 3]),
                 $ch, 'the same body sent chunked: the same request');
    check_replay($t->create(body => '{"gender":"male","prompt":"chunked body"}',
                            headers => ['idempotency-key' => 'fp-chunked']),
                 $ch, 'the header name in lowercase: the same key');

    # {} and an empty body (with and without a content type)
    my $e = $t->idem('fp-empty', body => '{}');
    check_new($e, 'fp-empty with {}: 202');
    check_replay($t->idem('fp-empty', body => ''), $e,
                 'an empty body without Content-Type: the same request as {}');
    check_replay($t->idem('fp-empty', body => '', ctype => 'application/json'), $e,
                 'an empty body with Content-Type: the same request as {}');
    check_replay($t->idem('fp-empty', body => ' { } '), $e,
                 '" { } ": the same request as {}');
    my $e2 = $t->idem('fp-empty-2', body => '');
    check_new($e2, 'fp-empty-2 with an empty body: 202');
    check_replay($t->idem('fp-empty-2', body => '{}'), $e2,
                 '{} after an empty body: the same request');

    # a default sent is not a default omitted
    reused($t->idem('fp-empty', body => '{"ageRange":"young_adult"}'),
           'ageRange sent with its default value: 422 IDEMPOTENCY_KEY_REUSED');
    reused($t->idem('fp-empty', body => '{"gender":"female"}'),
           'gender sent with the value it resolves to: 422 IDEMPOTENCY_KEY_REUSED');
    my $d = $t->idem('fp-default', body => '{"ageRange":"young_adult"}');
    check_new($d, 'fp-default with ageRange young_adult: 202');
    reused($t->idem('fp-default', body => '{}'),
           'the same key with ageRange omitted: 422 IDEMPOTENCY_KEY_REUSED');

    # other differences
    reused($t->idem('fp-order', body => '{"gender":"male","ageRange":"adult","prompt":"x  y"}'),
           'another prompt: 422 IDEMPOTENCY_KEY_REUSED');
    reused($t->idem('fp-order', body => '{"gender":"male","ageRange":"adult"}'),
           'prompt left out: 422 IDEMPOTENCY_KEY_REUSED');
    reused($t->idem('fp-order', body => '{"gender":"female","ageRange":"adult","prompt":"x y"}'),
           'another gender: 422 IDEMPOTENCY_KEY_REUSED');
    reused($t->idem('fp-order', project => P_MALE,
                body => '{"gender":"male","ageRange":"adult","prompt":"x y"}'),
           'another project (path): 422 IDEMPOTENCY_KEY_REUSED');
    reused($t->idem('fp-order', body => '{"gender":"male","ageRange":"adult","prompt":"X Y"}'),
           'a prompt differing in case: 422 IDEMPOTENCY_KEY_REUSED');

    # the projectId's case does not matter
    my $p = $t->idem('fp-case');
    check_new($p, 'fp-case, lowercase projectId: 202');
    check_replay($t->idem('fp-case', path => '/v1/projects/' . uc(P_FEMALE) . '/influencers'),
                 $p, 'uppercase projectId: the same request');
    my $p2 = $t->idem('fp-case-2', path => '/v1/projects/' . uc(P_MALE) . '/influencers');
    check_new($p2, 'fp-case-2, uppercase projectId first: 202');
    check_replay($t->idem('fp-case-2', project => P_MALE), $p2,
                 'then lowercase: the same request');
    my $mixed = P_MALE;
    $mixed =~ s/([a-f])/uc $1/e for 1 .. 3;
    check_replay($t->idem('fp-case-2', path => "/v1/projects/$mixed/influencers"), $p2,
                 'mixed case: the same request');
}

# ------------------------------------------------------------ key reused

{
    my $n0 = $t->forwards();
    my $first = $t->idem('reuse-1', body => '{"gender":"male"}');
    check_new($first, 'reuse-1: 202');
    my $r = $t->idem('reuse-1', body => '{"gender":"non_binary"}');
    reused($r, 'a different body: 422 IDEMPOTENCY_KEY_REUSED, without details');
    unlike($r->body, qr/fieldErrors|formErrors/, 'the reuse answer has no fieldErrors');
    ok(!defined $r->header('idempotent-replayed'), 'a reuse answer is not marked replayed');
    is($t->forwards(), $n0 + 1, 'a reuse is not forwarded');
    check_replay($t->idem('reuse-1', body => '{"gender":"male"}'), $first,
                 'the original request still replays after a mismatch');
}

# ------------------------------------------------------------ in flight

{
    my $n0 = $t->forwards();
    $t->set_backend(delay => 1.5);
    my $sock = $t->idem_async('fly-1', body => '{"prompt":"slow"}');
    my @fw = $t->wait_backend_requests($n0 + 1);
    is(scalar @fw, $n0 + 1, 'the first request reached the backend');

    my $busy = $t->idem('fly-1', body => '{"prompt":"slow"}');
    check_error($busy, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'the same request while the first is in flight: 409');
    is($busy->header('retry-after'), 3,
       '409 carries Retry-After from influencers_busy_retry_after');

    my $busy2 = $t->idem('"fly-1"', body => '{ "prompt" : "slow" }');
    check_error($busy2, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'the same request (quoted key, other spacing) in flight: 409');

    reused($t->idem('fly-1', body => '{"prompt":"fast"}'),
           'a different body while in flight: 422 IDEMPOTENCY_KEY_REUSED, not 409');

    my $first = finish_async($sock, 10);
    my $job = check_new($first, 'the first request completes: 202');
    ok(!$first->timed_out, 'the first request did not time out');
    is($t->forwards(), $n0 + 1, 'one forward while in flight');
    $t->set_backend;
    check_replay($t->idem('fly-1', body => '{"prompt":"slow"}'), $first,
                 'after it completed: a replay');
    is($t->forwards(), $n0 + 1, 'still one forward');
}

# ------------------------------------------------------------ no key

{
    my $n0 = $t->forwards();
    my @jobs;
    for my $i (1 .. 3) {
        my $r = $t->idem(undef, body => '{"prompt":"same body"}');
        push @jobs, check_new($r, "no Idempotency-Key, request $i: 202");
    }
    my %u = map { $_ => 1 } @jobs;
    is(scalar keys %u, 3, 'three requests without a key: three jobs');
    is($t->forwards(), $n0 + 3, 'three forwards');
}

# ------------------------------------------------------------ quoted keys

{
    my $n0 = $t->forwards();
    my $q = $t->idem('"quoted-abc"');
    check_new($q, 'key "quoted-abc" (quoted form): 202');
    check_replay($t->idem('quoted-abc'), $q, 'quoted-abc (bare): the same key');
    check_replay($t->idem('"quoted-abc"'), $q, '"quoted-abc" again: the same key');

    my $b = $t->idem('bare-abc');
    check_new($b, 'bare-abc: 202');
    check_replay($t->idem('"bare-abc"'), $b, '"bare-abc": the same key');

    my $e = $t->idem('"q\\"k\\\\z"');
    check_new($e, 'quoted key with escapes "q\\"k\\\\z": 202');
    check_replay($t->idem('q"k\\z'), $e, 'its unescaped bare form q"k\\z: the same key');

    my $other = $t->idem('quoted-abc-2');
    check_new($other, 'a different key: a new job');
    is($t->forwards(), $n0 + 4, 'four keys, four forwards');
}

# ------------------------------------------------------------ rejections store nothing

{
    my $n0 = $t->forwards();
    check_validation($t->idem('rej-1', body => '{"gender":"robot"}'), 'Invalid body.',
        { fieldErrors => { gender => [
            "Invalid enum value. Expected 'male' | 'female' | 'non_binary'"] } },
        'an invalid body with a key: 422 VALIDATION');
    check_new($t->idem('rej-1'), 'then a valid request with that key: 202, a new job');

    check_error($t->idem('rej-2', project => P_UNKNOWN), 404, 'NOT_FOUND',
                'Project not found.', 'an unknown project with a key: 404');
    check_new($t->idem('rej-2'), 'then a known project with that key: 202');

    check_error($t->idem('rej-3', ctype => 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE',
                undef, 'a wrong content type with a key: 415');
    check_new($t->idem('rej-3', body => '{"gender":"male"}'),
              'then another body with that key: 202, not a reuse');
    is($t->forwards(), $n0 + 3, 'only the accepted requests were forwarded');
}

# ------------------------------------------------------------ counters agree

{
    my $s = $t->stats();
    is($s->{inflight}, 0, 'stats: nothing in flight at the end');
    is($s->{bytesInUse}, $s->{entries} * $s->{recordSize},
       'stats: bytesInUse = entries * recordSize');
    is($s->{claims}, $t->forwards(), 'stats: claims = forwards received by the backend');
}

$t->check_log_clean;

done_testing;
