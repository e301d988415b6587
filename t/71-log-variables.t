#!/usr/bin/perl

# The log_format variables ($influencers_job_id, _influencer_id,
# _idempotency, _error, _org, _status, _uri) in the README's recommended
# access log (JSON lines, escape=json): after known traffic, each
# request's line has the values it should, and no line holds an API key,
# an Idempotency-Key or anything of a body.  ISSUE 14: every line is valid
# JSON (strict UTF-8), also for requests that end without an answer (an
# HTTP/2 stream reset mid-forward: status 0, not nginx's "000"), aborted
# and timed-out ones, and hostile URIs (%FF, %00, control bytes, raw bytes
# that are not UTF-8).  With a debug build of nginx (Debian's is), the
# module's debug traces are there at each decision, and never carry a key,
# a digest of one, or a body either.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA ();
use JSON::PP ();
use Time::HiRes ();
use InfTest qw(:all);
use H2;

plan skip_all => 'module not built: ' . module_path() unless have_module();

# the format as the README gives it
open my $fh, '<', "$FindBin::Bin/../README.md" or die "README.md: $!";
my $readme = do { local $/; <$fh> };
close $fh;
my ($format) = $readme =~ /^(log_format influencers escape=json\n.*?\}';)$/ms;
ok($format, 'the README has the recommended log_format') or BAIL_OUT('no format');

my $t = InfTest->new(log_level => 'debug');
$t->write_directory;
$t->conf($t->default_conf(
    http => $format,
    server => "access_log %%TESTDIR%%/influencers.log influencers;\n"
            . "        listen 127.0.0.1:%%PORT_H2C%% http2;\n"
            . "        client_header_timeout 1s;\n"
            . '        ' . STATS_LOCATION));
$t->start_backend;
$t->run;

my $KEY1 = 'idem-key-QQ7-first';
my $KEY2 = 'idem-key-QQ7-second';
my $KEY3 = 'idem-key-QQ7-third';
my $PROMPT = 'prompt-secret-ZZ9';

my %want;     # requestId => what its line must say

sub expect {
    my ($r, $name, %f) = @_;
    my $id = $r->header('x-request-id');
    ok($id, "$name: an X-Request-Id") or return;
    $want{$id} = { name => $name, status => $r->status, error => '',
                   org => 'org_acme', idempotency => 'none', jobId => '',
                   influencerId => '', %f };
}

my $r = $t->idem(undef);
my $j = $r->json || {};
expect($r, 'a job without a key', jobId => $j->{jobId}, influencerId => $j->{influencerId});

$r = $t->idem($KEY1, body => qq({"prompt":"$PROMPT"}));
my $j1 = $r->json || {};
expect($r, 'a new key', idempotency => 'claim', jobId => $j1->{jobId},
       influencerId => $j1->{influencerId});

$r = $t->idem($KEY1, body => qq({"prompt":"$PROMPT"}));
expect($r, 'a replay', idempotency => 'replay', jobId => $j1->{jobId},
       influencerId => $j1->{influencerId});

$r = $t->idem($KEY1, body => qq({"prompt":"$PROMPT-2"}));
expect($r, 'another body', idempotency => 'mismatch',
       error => 'IDEMPOTENCY_KEY_REUSED');

{
    $t->set_backend(delay => 0.6);
    my $n0 = $t->forwards();
    my $sock = $t->idem_async($KEY2);
    $t->wait_backend_requests($n0 + 1);
    $r = $t->idem($KEY2);
    expect($r, 'in flight', idempotency => 'conflict',
           error => 'IDEMPOTENCY_IN_PROGRESS');
    $r = finish_async($sock, 5);
    my $j2 = $r->json || {};
    expect($r, 'the one in flight', idempotency => 'claim',
           jobId => $j2->{jobId}, influencerId => $j2->{influencerId});
}

$t->set_backend(status => 500);
$r = $t->idem($KEY3);
my ($fw) = reverse $t->backend_requests;
my $job = json_decode($fw->{body}) || {};
expect($r, 'a failed forward', idempotency => 'released',
       error => 'UPSTREAM_ERROR', jobId => $job->{jobId},
       influencerId => $job->{influencerId});
ok($job->{jobId}, 'the failed forward carried a job id');
$t->set_backend;

expect($t->create(key => K_UNKNOWN), 'an unknown key', org => '',
       error => 'UNAUTHENTICATED');
expect($t->create(key => K_READ), 'a read key', error => 'FORBIDDEN_SCOPE');
expect($t->create(project => P_GLOBEX), "another org's project",
       error => 'NOT_FOUND');
expect($t->create(body => '{"name":"name-secret-ZZ9"}'), 'an invalid body',
       error => 'VALIDATION');
expect($t->raw("NONSENSE\r\n\r\n"), "nginx's own 400", org => '',
       error => 'BAD_REQUEST');

is($t->http('GET', '/_stats', [], undef)->status, 200, 'a request of another location');

# ISSUE 14: a forward whose outcome is unknown, then the retry that sends
# the job again
{
    my $key = 'idem-key-QQ7-fourth';
    $t->set_backend(drop => 1);
    $r = $t->idem($key);
    my ($f4) = reverse $t->backend_requests;
    my $j4 = json_decode($f4->{body}) || {};
    expect($r, 'a forward dropped after it was sent', idempotency => 'claim',
           error => 'UPSTREAM_ERROR', jobId => $j4->{jobId},
           influencerId => $j4->{influencerId});
    $t->set_backend;
    $r = $t->idem($key);
    expect($r, 'the job sent again', idempotency => 'resend',
           jobId => $j4->{jobId}, influencerId => $j4->{influencerId});
}

# requests that end without an answer, or with nginx's, and hostile URIs:
# their lines are checked for being JSON only
my $EXTRA = 0;
{
    # an HTTP/2 stream reset mid-forward: no answer at all
    $t->set_backend(delay => 0.8);
    my $n0 = $t->forwards;
    my $c = H2->connect(port => $t->port('h2c'));
    $c->request(1, path => '/v1/projects/' . P_FEMALE . '/influencers', body => '{}',
                headers => [authorization => 'Bearer ' . K_WRITE,
                            'content-type' => 'application/json',
                            'idempotency-key' => 'idem-key-QQ7-h2']);
    $t->wait_backend_requests($n0 + 1);
    $c->rst(1);
    $c->close;
    Time::HiRes::sleep(1.0);
    $EXTRA++;

    # an HTTP/1.1 partner that hangs up mid-forward
    $t->raw($t->idem_request('idem-key-QQ7-gone'), close_after => 0.2);
    Time::HiRes::sleep(0.8);
    $t->set_backend;
    $EXTRA++;

    # a request whose headers never end: client_header_timeout
    $t->raw("POST /v1/projects/x/influencers HTTP/1.1\r\nHost: l\r\n", timeout => 3);
    $EXTRA++;

    # hostile URIs
    for my $uri ('/%FF%FE/x', '/v1/projects/%00/influencers', '/a%0Ab%0D%09c',
                 "/raw\xff\xfe\xc3(", '/q"uote\\back', '/%E2%80%94ok') {
        $t->raw("GET $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        $EXTRA++;
    }
}

$t->stop;

# ------------------------------------------------------------ the access log

my @lines = split /\n/, $t->read_file('influencers.log') // '';
cmp_ok(scalar @lines, '>=', scalar(keys %want) + 1 + $EXTRA - 1,
       'a line a request (the header that never ended may have none)');

# strict: UTF-8 only, one object a line, numbers where numbers go
my $STRICT = JSON::PP->new->utf8;
my @bad = grep { my $e = eval { $STRICT->decode($_) };
                 !(ref $e eq 'HASH' && $e->{status} =~ /^\d+$/ && !ref $e->{status}
                   && $e->{requestTime} =~ /^[\d.]+$/) } @lines;
is(scalar @bad, 0, 'every line of the access log is valid JSON, status a number')
    or diag(join "\n", @bad[0 .. ($#bad < 5 ? $#bad : 5)]);
ok((grep { /"status":0,/ } @lines), 'a request that ended without an answer: status 0');
ok((grep { /"uri":"\/%FF%FE\/x"/ } @lines), 'a URI with %FF: logged as sent, not as the error page');
ok((grep { /"uri":"\/raw%FF%FE%C3\("/ } @lines), 'raw bytes that are not UTF-8: percent-encoded');
ok((grep { /"uri":"\/q%22uote%5Cback"/ } @lines), 'a quote and a backslash: percent-encoded');

my %seen;
for my $line (@lines) {
    my $e = json_decode($line);
    ok($e, 'a JSON line') or do { diag $line; next };
    next unless $want{ $e->{requestId} } || $e->{uri} eq '/_stats';
    my @keys = sort keys %$e;
    is_deeply(\@keys, [sort qw(time requestId status error org idempotency
                               jobId influencerId method uri requestTime
                               bytesSent)], 'every field of the format');

    if ($e->{uri} eq '/_stats') {
        is_deeply([@$e{qw(requestId error org idempotency jobId influencerId)}],
                  ['', '', '', '', '', ''],
                  'a request the module did not serve: every variable empty');
        next;
    }

    my $w = $want{ $e->{requestId} };
    ok($w, "a line of a known request ($e->{requestId})") or next;
    $seen{ $e->{requestId} }++;
    my %got = map { $_ => $e->{$_} } qw(status error org idempotency jobId influencerId);
    my %exp = map { $_ => $w->{$_} } keys %got;
    is_deeply(\%got, \%exp, "$w->{name}: the line's variables");
}
is(scalar keys %seen, scalar keys %want, 'every request has its line');

# never a key, nor a digest of one, nor what a body held

my @secrets = (K_WRITE, K_READ, K_UNKNOWN, $KEY1, $KEY2, $KEY3, $PROMPT,
               'name-secret-ZZ9',
               map { Digest::SHA::sha256_hex($_) } K_WRITE, K_READ, K_UNKNOWN);
my $log = $t->read_file('influencers.log') // '';
is(scalar(grep { index($log, $_) >= 0 } @secrets), 0,
   'the access log holds no key, digest or body');

# ------------------------------------------------------------ debug traces

SKIP: {
    skip 'nginx is not built --with-debug: no debug traces', 3
        unless nginx_configure() =~ /--with-debug/;

    my @ours = grep { /\[debug\] \d+#\d+: (?:\*\d+ )?influencers[ :]/ }
               split /\n/, $t->error_log;
    my $text = join "\n", @ours;

    my @decisions = (
        qr/influencers: directory identity: org "org_acme", influencers:write/,
        qr/influencers: directory identity: org "", UNAUTHENTICATED/,
        qr/influencers: Idempotency-Key: sent, \d+ bytes: valid/,
        qr/influencers: body parsed: invalid/,
        qr/influencers zone "jobs": the key has an entry, another request's/,
        qr/influencers zone "jobs": claim with a key: busy/,
        qr/influencers zone "jobs": claim without a key: new/,
        qr/influencers zone "jobs": failed, the key released/,
        qr/influencers: the store answered: replay/,
        qr/influencers forward: done, rc 0, status 500: UPSTREAM_ERROR, sent, \d+ ms/,
        qr/influencers: the store answered: the key's job in doubt: send it again/,
        qr/influencers: the forward's outcome to the store: failed/,
        qr/influencers answer: 409 IDEMPOTENCY_IN_PROGRESS/,
        qr/influencers answer: 202 job_\w{26}, replayed/,
        qr/influencers errors: nginx's 400 answered as BAD_REQUEST/,
    );
    my @missing = grep { $text !~ $_ } @decisions;
    is(scalar @missing, 0, 'a debug trace at each decision')
        or diag("missing: @missing");

    my @leaks = grep { my $l = $_; grep { index($l, $_) >= 0 } @secrets } @ours;
    is(scalar @leaks, 0, 'no trace holds a key, a digest of one, or a body')
        or diag(join "\n", @leaks[0 .. ($#leaks < 9 ? $#leaks : 9)]);
    cmp_ok(scalar @ours, '>', 50, scalar(@ours) . ' traces of the module');
}

$t->check_log_clean;

done_testing;
