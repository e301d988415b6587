#!/usr/bin/perl

# influencers_metrics: Prometheus's text format, summed over the workers.
# After a known sequence of requests every series has an exact value:
# answers by status and error code (nginx's own 400 through the
# influencers_errors location included), forwards by outcome and their
# durations, each zone's idempotency decisions, records by state, orgs and
# Redis counters.  Then `promtool check metrics` on the answer, and a real
# Prometheus server, started here on loopback, scrapes it and answers a
# query for one counter.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use POSIX ();
use HTTP::Tiny;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $PROMTOOL = $ENV{INFLUENCERS_PROMTOOL} || '/usr/bin/promtool';
my $PROMETHEUS = $ENV{INFLUENCERS_PROMETHEUS} || '/usr/bin/prometheus';

# the Prometheus server and its watchdog, stopped by pid at the end
my (@PROMETHEUS, @WATCHDOGS);

# a second server, its own zone (small, a 1 s lease, half the zone for an
# org) and identity from a header, so that orgs can fill it; its backend
# location lets a partner who hangs up cut the forward short
my $t = InfTest->new(log_level => 'info');
$t->write_directory;
$t->conf($t->default_conf(
    read_timeout => '1s',
    server => STATS_LOCATION . "\n"
            . "        location = /_stats_small { influencers_stats zone=small; }\n"
            . "        location = /metrics { influencers_metrics; }",
    http => "influencers_zone zone=small:32k lease=1s org_share=50%;\n"
          . endpoint_server(port => 'VAR', zone => 'small',
                identity => 'influencers_org $http_x_org;',
                location => 'influencers_scopes "influencers:write";',
                render_extra => 'proxy_read_timeout 3s;')));
$t->start_backend;
$t->run;

my $VAR = $t->port('var');

sub scrape {
    my $r = $t->http('GET', '/metrics', [], undef);
    return wantarray ? (parse($r->body // ''), $r) : parse($r->body // '');
}

# "name{labels}" => value, labels as written
sub parse {
    my ($text) = @_;
    my %m;
    for (split /\n/, $text) {
        next if /^#/ || !length;
        my ($k, $v) = /^(\S+(?:\{[^}]*\})?) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return \%m;
}

# ------------------------------------------------------------ the answer

my ($m0, $r0) = scrape();
is($r0->status, 200, 'GET /metrics: 200');
is($r0->header('content-type'), 'text/plain; version=0.0.4; charset=utf-8',
   "Prometheus's text format, version 0.0.4");
is($r0->header('x-request-id'), undef, 'no X-Request-Id: not an answer of the API');
like($r0->body, qr/^# HELP influencers_responses_total /, 'HELP first');
my @types = $r0->body =~ /^# TYPE (\S+) (\S+)$/mg;
my %types = @types;
is_deeply(\%types, {
    influencers_responses_total => 'counter',
    influencers_forwards_total => 'counter',
    influencers_forward_duration_seconds => 'histogram',
    influencers_idempotency_total => 'counter',
    influencers_zone_records => 'gauge',
    influencers_zone_orgs => 'gauge',
    influencers_zone_largest_org_records => 'gauge',
    influencers_zone_org_limit_records => 'gauge',
    influencers_redis_operations_total => 'counter',
    influencers_redis_failures_total => 'counter',
    influencers_redis_fallbacks_total => 'counter',
    influencers_redis_stale_finishes_total => 'counter',
    influencers_redis_owed_finishes => 'gauge',
    influencers_redis_owed_finishes_sent_again_total => 'counter',
    influencers_redis_owed_finishes_abandoned_total => 'counter',
    influencers_redis_owed_finishes_unkept_total => 'counter',
    influencers_redis_unsafe => 'gauge',
    influencers_redis_restarts_total => 'counter',
    influencers_redis_data_lost_total => 'counter',
    influencers_redis_bad_values_total => 'counter',
}, 'the families and their types, each once');
is(scalar(@types) / 2, scalar(keys %types), 'no family twice');
my @help = $r0->body =~ /^# HELP (\S+) \S/mg;
is_deeply([sort @help], [sort keys %types], 'a HELP line for each family');

my $R = $t->stats->{records};
my $RS = $t->stats('/_stats_small')->{records};
ok($R > 100 && $RS >= 10, "zones of $R and $RS records");
my $L = int($RS * 50 / 100);

# ------------------------------------------------------------ what is expected

my %exp;
my @answers = (
    [202, 'none'], [400, 'BAD_REQUEST'], [401, 'UNAUTHENTICATED'],
    [403, 'FORBIDDEN_SCOPE'], [404, 'NOT_FOUND'], [405, 'METHOD_NOT_ALLOWED'],
    [408, 'REQUEST_TIMEOUT'], [409, 'IDEMPOTENCY_IN_PROGRESS'],
    [413, 'PAYLOAD_TOO_LARGE'], [414, 'URI_TOO_LONG'],
    [415, 'UNSUPPORTED_MEDIA_TYPE'], [422, 'VALIDATION'],
    [422, 'IDEMPOTENCY_KEY_REUSED'], [400, 'REQUEST_HEADER_TOO_LARGE'],
    [500, 'INTERNAL'], [501, 'NOT_IMPLEMENTED'], [502, 'UPSTREAM_ERROR'],
    [503, 'CAPACITY'], [504, 'UPSTREAM_TIMEOUT'], [503, 'UNAVAILABLE'],
);
$exp{"influencers_responses_total{code=\"$_->[0]\",error=\"$_->[1]\"}"} = 0
    for @answers;

# every answer the module has is a series from the start, at 0: those of
# the contract above, and any other the module may add
my @more = grep { /^influencers_responses_total\{/ && !exists $exp{$_} } keys %$m0;
note("more answers: @more") if @more;
$exp{$_} = 0 for @more;
is_deeply([grep { !exists $m0->{$_} } sort keys %exp], [],
          "every answer of the contract is a series");
is_deeply([map { $m0->{$_} } @more], [map { 0 } @more], 'the others at 0 too');
$exp{"influencers_forwards_total{outcome=\"$_\"}"} = 0
    for qw(accepted failed not_found timeout unknown);
for my $z (qw(jobs small)) {
    $exp{"influencers_idempotency_total{zone=\"$z\",outcome=\"$_\"}"} = 0
        for qw(claim replay conflict mismatch release lease_expiry
               capacity_rejection share_rejection resend unknown_outcome
               kept_in_doubt);
    $exp{"influencers_zone_records{zone=\"$z\",state=\"$_\"}"} = 0
        for qw(inflight keyed evictable);
    $exp{"influencers_zone_orgs{zone=\"$z\"}"} = 0;
    $exp{"influencers_zone_largest_org_records{zone=\"$z\"}"} = 0;
    $exp{"influencers_redis_${_}_total{zone=\"$z\"}"} = 0
        for qw(operations failures fallbacks stale_finishes
               owed_finishes_sent_again owed_finishes_abandoned
               owed_finishes_unkept restarts data_lost bad_values);
    $exp{"influencers_redis_${_}{zone=\"$z\"}"} = 0 for qw(owed_finishes unsafe);
}
$exp{'influencers_zone_records{zone="jobs",state="free"}'} = $R;
$exp{'influencers_zone_records{zone="small",state="free"}'} = $RS;
$exp{'influencers_zone_org_limit_records{zone="jobs"}'} = int($R * 25 / 100);
$exp{'influencers_zone_org_limit_records{zone="small"}'} = $L;

my @BUCKETS = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 +Inf);
# forwards that may take under 0.5 s, those that surely take more, and the
# least the slow ones take together
my ($fast, $slow, $slow_s) = (0, 0, 0);

sub answer {
    my ($code, $error, $n) = @_;
    $exp{"influencers_responses_total{code=\"$code\",error=\"" . ($error // 'none') . '"}'} += $n // 1;
}
sub idem   { $exp{"influencers_idempotency_total{zone=\"$_[0]\",outcome=\"$_[1]\"}"} += $_[2] // 1; }
sub recs   { $exp{"influencers_zone_records{zone=\"$_[0]\",state=\"$_[1]\"}"} += $_[2]; }
sub fwd    { $exp{"influencers_forwards_total{outcome=\"$_[0]\"}"} += $_[1] // 1; }

# a new record in a zone: one free less, one more in a state
sub taken  { recs($_[0], 'free', -1); recs($_[0], $_[1], 1); }

# every series but the histogram's, exactly; the histogram's by bounds
sub check_metrics {
    my ($name) = @_;
    my $m = scrape();
    my %got = map { $_ => $m->{$_} } grep { !/^influencers_forward_duration/ } keys %$m;
    is_deeply(\%got, \%exp, "every series after: $name")
        or diag(join "\n", map { "$_: got " . ($got{$_} // 'none') . ", want " . ($exp{$_} // 'none') }
                grep { ($got{$_} // 'x') ne ($exp{$_} // 'x') } sort(keys %got, keys %exp));

    my $n = $fast + $slow;
    my @b = map { $m->{"influencers_forward_duration_seconds_bucket{le=\"$_\"}"} } @BUCKETS;
    is(scalar(grep { defined } @b), scalar @BUCKETS, "$name: every bucket");
    is_deeply([sort { $a <=> $b } @b], \@b, "$name: buckets are cumulative");
    is($m->{'influencers_forward_duration_seconds_count'}, $n, "$name: histogram count = forwards ($n)");
    is($b[-1], $n, "$name: +Inf bucket = count");
    is($b[-2], $n, "$name: every forward took under 60 s");
    cmp_ok($b[6], '<=', $fast, "$name: no slow forward within 0.5 s");
    my $sum = $m->{'influencers_forward_duration_seconds_sum'} // -1;
    cmp_ok($sum, '>=', $slow_s, "$name: the sum covers the slow forwards ($slow_s s)");
    cmp_ok($sum, '<', $slow_s + 0.5 * $n + 2, "$name: and not much more");
    return $m;
}

check_metrics('a fresh start');

# ------------------------------------------------------------ traffic, server 1

is($t->idem(undef)->status, 202, 'a job without a key: 202');
answer(202); idem(jobs => 'claim'); taken(jobs => 'evictable'); fwd('accepted'); $fast++;

is($t->idem('m-1')->status, 202, 'key m-1: 202');
answer(202); idem(jobs => 'claim'); taken(jobs => 'keyed'); fwd('accepted'); $fast++;
$exp{'influencers_zone_orgs{zone="jobs"}'} = 1;
$exp{'influencers_zone_largest_org_records{zone="jobs"}'} = 1;

is($t->idem('m-1')->header('idempotent-replayed'), 'true', 'm-1 again: a replay') for 1 .. 2;
answer(202, 'none', 2); idem(jobs => 'replay', 2);

is($t->idem('m-1', body => '{"gender":"male"}')->status, 422, 'm-1, another body: 422');
answer(422, 'IDEMPOTENCY_KEY_REUSED'); idem(jobs => 'mismatch');

is($t->create(key => K_UNKNOWN)->status, 401, 'an unknown key: 401');
answer(401, 'UNAUTHENTICATED');
is($t->create(key => K_READ)->status, 403, 'a read key: 403');
answer(403, 'FORBIDDEN_SCOPE');
is($t->create(project => P_UNKNOWN)->status, 404, 'no such project: 404');
answer(404, 'NOT_FOUND');
is($t->create(method => 'GET', body => undef)->status, 405, 'GET: 405');
answer(405, 'METHOD_NOT_ALLOWED');
is($t->create(project => 'not-a-uuid')->status, 422, 'a bad projectId: 422');
answer(422, 'VALIDATION');
is($t->idem('')->status, 422, 'an empty Idempotency-Key: 422');
answer(422, 'VALIDATION');
is($t->create(body => '{"prompt":"' . ('x' x 5000) . '"}')->status, 413, 'a large body: 413');
answer(413, 'PAYLOAD_TOO_LARGE');
is($t->create(ctype => 'text/plain')->status, 415, 'text/plain: 415');
answer(415, 'UNSUPPORTED_MEDIA_TYPE');
is($t->create(body => '{"name":"x"}')->status, 422, 'an unknown field: 422');
answer(422, 'VALIDATION');
is($t->raw("NONSENSE\r\n\r\n")->status, 400, "nginx's own 400, through influencers_errors");
answer(400, 'BAD_REQUEST');

check_metrics('answers without a forward');

$t->set_backend(status => 500);
is($t->idem('m-2')->status, 502, 'key m-2, the backend fails: 502');
answer(502, 'UPSTREAM_ERROR'); idem(jobs => 'claim'); idem(jobs => 'release');
taken(jobs => 'evictable'); fwd('failed'); $fast++;

$t->set_backend(status => 404);
is($t->idem(undef)->status, 404, "the backend's 404: 404");
answer(404, 'NOT_FOUND'); idem(jobs => 'claim'); taken(jobs => 'evictable');
fwd('not_found'); $fast++;

# nginx's own timeout: the job may be at the backend, the key keeps it
$t->set_backend(delay => 1.5);
is($t->idem('m-3')->status, 504, 'key m-3, the backend too slow: 504');
answer(504, 'UPSTREAM_TIMEOUT'); idem(jobs => 'claim'); idem(jobs => 'unknown_outcome');
taken(jobs => 'keyed'); fwd('timeout'); $slow++; $slow_s += 1;

# one in flight: a conflict meanwhile
{
    $t->set_backend(delay => 0.6);
    my $n0 = $t->forwards();
    my $sock = $t->idem_async('m-4');
    $t->wait_backend_requests($n0 + 1);
    is($t->idem('m-4')->status, 409, 'key m-4 while in flight: 409');
    answer(409, 'IDEMPOTENCY_IN_PROGRESS'); idem(jobs => 'conflict');
    is(finish_async($sock, 5)->status, 202, 'the request in flight: 202');
    answer(202); idem(jobs => 'claim'); taken(jobs => 'keyed'); fwd('accepted');
    $slow++; $slow_s += 0.6;
}
$t->set_backend;
$exp{'influencers_zone_largest_org_records{zone="jobs"}'} = 3;

check_metrics('forwards of every outcome but one');

# ------------------------------------------------------------ traffic, server 2

# a partner who hangs up while its job is forwarded, where the backend
# location does not ignore it: the forward is cut after the job was sent,
# nothing is answered, and the store hears of it at once (ISSUE 14): the
# outcome is unknown, and a job without a key is a lost job, evictable
my $t_hang = Time::HiRes::time();
{
    $t->set_backend(delay => 1);
    my $n0 = $t->forwards();
    $t->create(port => $VAR, headers => ['X-Org' => 'org_a'], close_after => 0.3);
    $t->wait_backend_requests($n0 + 1);
    Time::HiRes::sleep(0.3);
    idem(small => 'claim'); idem(small => 'unknown_outcome');
    taken(small => 'evictable'); fwd('unknown');
    $fast++; $slow_s += 0.25;
    check_metrics('a partner who hung up');
    $t->set_backend;
}
sleep_until($t_hang + 1.3);

# orgs fill the small zone: org_a and org_b up to their share, then org_c
# takes what is left and finds it full.  The lost job's record is reused
# last.
my %held;
for my $org (qw(org_a org_b org_c)) {
    my ($ok, $last) = (0, undef);
    for my $i (1 .. $RS + 1) {
        $last = $t->idem("$org-$i", port => $VAR, headers => ['X-Org' => $org]);
        last unless $last->status == 202;
        $ok++;
    }
    $held{$org} = $ok;
    is($last->status, 503, "$org: $ok jobs, then 503");
    is($last->json->{error}{code}, 'CAPACITY', "$org: CAPACITY");
}
is($held{org_a}, $L, "org_a holds its share: $L");
is($held{org_b}, $L, "org_b holds its share: $L");
is($held{org_c}, $RS - 2 * $L, 'org_c: what was left');

my $n = $RS;
answer(202, 'none', $n); idem(small => 'claim', $n); fwd('accepted', $n); $fast += $n;
answer(503, 'CAPACITY', 3); idem(small => 'share_rejection', 2);
idem(small => 'capacity_rejection');
$exp{'influencers_zone_records{zone="small",state="evictable"}'} = 0;
$exp{'influencers_zone_records{zone="small",state="free"}'} = 0;
$exp{'influencers_zone_records{zone="small",state="keyed"}'} = $RS;
$exp{'influencers_zone_orgs{zone="small"}'} = $held{org_c} ? 3 : 2;
$exp{'influencers_zone_largest_org_records{zone="small"}'} = $L;

my $m = check_metrics('a full zone');

# the JSON of influencers_stats says the same of each zone
for my $z (['jobs', '/_stats'], ['small', '/_stats_small']) {
    my $s = $t->stats($z->[1]);
    my %pairs = (claim => 'claims', replay => 'replays', conflict => 'conflicts',
                 mismatch => 'mismatches', release => 'releases',
                 lease_expiry => 'leaseExpiries',
                 capacity_rejection => 'capacityRejections',
                 share_rejection => 'shareRejections');
    is_deeply({ map { $_ => $m->{"influencers_idempotency_total{zone=\"$z->[0]\",outcome=\"$_\"}"} } keys %pairs },
              { map { $_ => $s->{$pairs{$_}} } keys %pairs },
              "zone $z->[0]: the same decisions as influencers_stats");
    is($m->{"influencers_zone_records{zone=\"$z->[0]\",state=\"free\"}"},
       $s->{records} - $s->{entries}, "zone $z->[0]: free = records - entries");
}

# a reload keeps every count: the module's zone and the zones' own
ok($t->reload, 'nginx -s reload');
check_metrics('a reload');

# ------------------------------------------------------------ promtool

my $text = $t->http('GET', '/metrics', [], undef)->body;

SKIP: {
    skip "no $PROMTOOL (Debian: apt-get install prometheus)", 2 unless -x $PROMTOOL;
    my $file = $t->write_file('metrics.txt', $text);
    my $out = `$PROMTOOL check metrics < $file 2>&1`;
    is($? >> 8, 0, 'promtool check metrics: exit 0');
    is($out, '', 'promtool check metrics: no lint finding') or diag $out;
}

# ------------------------------------------------------------ Prometheus

SKIP: {
    skip "no $PROMETHEUS (Debian: apt-get install prometheus)", 3 unless -x $PROMETHEUS;

    my $port = $t->port('prometheus');
    my $dir = $t->dir . '/prometheus';
    mkdir $dir;
    my $main = $t->port;
    $t->write_file("$dir/prometheus.yml", <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: influencers
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:$main']
EOF

    my $pid = start_prometheus($dir, $port);
    ok($pid, "prometheus started on 127.0.0.1:$port");

    my $http = HTTP::Tiny->new(timeout => 3);
    my $want = $exp{'influencers_responses_total{code="202",error="none"}'};
    my $query = 'influencers_responses_total{code="202",error="none"}';
    my ($value, $up, $last) = (undef, undef, '');
    my $end = Time::HiRes::time() + 30;
    while (Time::HiRes::time() < $end) {
        my $r = $http->get("http://127.0.0.1:$port/api/v1/query?"
                           . $http->www_form_urlencode({ query => $query }));
        $last = $r->{content} // '';
        if ($r->{success}) {
            my $j = json_decode($r->{content});
            my $res = $j && $j->{data} && $j->{data}{result};
            if ($res && @$res) {
                $value = $res->[0]{value}[1];
                last if defined $value && $value == $want;
            }
        }
        Time::HiRes::sleep(0.5);
    }
    is($value, $want, "Prometheus scraped the endpoint: $query = $want")
        or diag("last answer: $last\n" . ($t->read_file("$dir/prometheus.log") // ''));

    my $r = $http->get("http://127.0.0.1:$port/api/v1/query?query=up");
    my $j = json_decode($r->{content} // '') || {};
    my ($res) = @{ $j->{data}{result} || [] };
    is($res && $res->{value}[1], '1', 'the target is up')
        or diag($r->{content});

    stop_prometheus($pid);
}

$t->check_log_clean;

# ------------------------------------------------------------ fleet mode

# Redis round trips and failures; and the claim counter never goes down,
# where the JSON's claims take back a claim that Redis answered
SKIP: {
    skip InfTest::redis_missing(), 17 if InfTest::redis_missing();

    my ($n1, $n2) = InfTest->fleet(
        log_level => 'info',
        zone      => 'zone=jobs:1m',
        redis     => 'timeout=200ms',
        server    => STATS_LOCATION . "\n"
                     . "        location = /metrics { influencers_metrics; }");

    my $key = "fleet-metrics-$$";
    is($n1->idem($key)->status, 202, 'fleet: a new key on node 1: 202');
    is($n1->idem($key)->header('idempotent-replayed'), 'true',
       'fleet: node 1 replays it from its zone');
    is($n2->idem($key)->header('idempotent-replayed'), 'true',
       'fleet: node 2 replays it, from Redis');
    is($n1->idem(undef)->status, 202, 'fleet: a job without a key');

    $n1->stop_redis;
    is($n1->idem("$key-2")->status, 503, 'fleet: Redis gone, a new key: 503');

    my $z = 'zone="jobs"';
    my %want = (
        1 => { ops => 3, failures => 1, claim => 3, replay => 1, claims => 2,
               unavailable => 1 },
        2 => { ops => 1, failures => 0, claim => 1, replay => 1, claims => 0,
               unavailable => 0 },
    );
    for my $i (1, 2) {
        my $n = $i == 1 ? $n1 : $n2;
        my $m = parse($n->http('GET', '/metrics', [], undef)->body // '');
        my $s = $n->stats;
        is_deeply({
            ops => $m->{"influencers_redis_operations_total{$z}"},
            failures => $m->{"influencers_redis_failures_total{$z}"},
            claim => $m->{"influencers_idempotency_total{$z,outcome=\"claim\"}"},
            replay => $m->{"influencers_idempotency_total{$z,outcome=\"replay\"}"},
            claims => $s->{claims},
            unavailable => $m->{'influencers_responses_total{code="503",error="UNAVAILABLE"}'},
        }, $want{$i}, "fleet: node $i: round trips, failures and claims");
        is($m->{"influencers_redis_operations_total{$z}"}, $s->{redisOps},
           "fleet: node $i: round trips as influencers_stats says");
        is($m->{"influencers_redis_failures_total{$z}"}, $s->{redisFailures},
           "fleet: node $i: failures as influencers_stats says");
    }

    $_->check_log_clean for $n1, $n2;
}

done_testing;

# ------------------------------------------------------------ helpers

sub start_prometheus {
    my ($dir, $port) = @_;
    my $pid = InfTest::spawn("$dir/prometheus.log", undef, $PROMETHEUS,
        "--config.file=$dir/prometheus.yml", "--storage.tsdb.path=$dir/data",
        "--web.listen-address=127.0.0.1:$port", '--log.level=warn');
    push @PROMETHEUS, $pid;
    watchdog($pid);
    return $pid;
}

# a process that stops prometheus if this test dies without its END block
sub watchdog {
    my ($pid) = @_;
    my $owner = $$;
    my $w = fork;
    return unless defined $w;
    if ($w == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        while (getppid() == $owner && kill 0, $pid) {
            Time::HiRes::sleep(0.5);
        }
        kill 'KILL', $pid if getppid() != $owner && kill 0, $pid;
        POSIX::_exit(0);
    }
    push @WATCHDOGS, $w;
}

sub stop_prometheus {
    my ($pid) = @_;
    return unless $pid && kill 0, $pid;
    kill 'TERM', $pid;
    my $end = Time::HiRes::time() + 10;
    while (Time::HiRes::time() < $end) {
        return if waitpid($pid, POSIX::WNOHANG()) == $pid;
        Time::HiRes::sleep(0.1);
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

END {
    my $rc = $?;
    stop_prometheus($_) for @PROMETHEUS;
    for my $w (@WATCHDOGS) {
        kill 'KILL', $w;
        waitpid $w, 0;
    }
    $? = $rc;
}
