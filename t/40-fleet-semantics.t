#!/usr/bin/perl

# CONTRACT 6 (a fleet of gateways): the semantics of section 3 across two
# gateway nodes (each a master and two workers) that share idempotency
# through one Redis, and what each request costs Redis.
#
#   - a key accepted on node 1 replays byte for byte on node 2 (body,
#     Location, Retry-After, Idempotency-Expires, Idempotent-Replayed, a
#     request id of its own); another body, on either node, is 422
#     IDEMPOTENCY_KEY_REUSED; a key in flight on node 1 is 409 on node 2;
#     the org scopes a key across the fleet too;
#   - a failed forward (backend 500 -> 502, backend 404) releases the key
#     fleet-wide: the other node takes it as a new job;
#   - round trips (INFO commandstats): a request without a key sends no
#     command and opens no connection; a new key costs one EVALSHA before
#     the forward and one after; a replay this node has seen costs none; a
#     first replay on the other node costs exactly one, later ones none;
#   - what Redis holds: keys <prefix>:<16 hex>:<64 hex>, nothing the
#     partner sent in clear, an in-flight claim lives for the lease, a
#     finished entry for the ttl; a rejected request leaves nothing;
#   - Redis loses its data (FLUSHALL) while node 1 has an entry cached:
#     node 1 still replays it from its zone.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $TTL   = 600;
my $LEASE = 10;
my $KEY_RE = qr/^influencers:[0-9a-f]{16}:[0-9a-f]{64}$/;

my ($n1, $n2) = InfTest->fleet(
    log_level => 'info',
    zone      => "zone=jobs:1m ttl=${TTL}s lease=${LEASE}s",
    redis     => 'timeout=500ms',
    location  => "influencers_retry_after 7s;\n"
               . "            influencers_busy_retry_after 3s;",
);

# the EVALSHA (and EVAL) calls Redis has served
sub evals { return $n1->redis_calls('evalsha', 'eval'); }

sub fleet_keys { return $n1->redis_keys('influencers:*'); }

sub check_new { my ($r, $name) = @_; return check_new_job($r, $name, retry_after => 7); }

sub reused {
    my ($r, $name) = @_;
    check_error($r, 422, 'IDEMPOTENCY_KEY_REUSED', undef, $name);
}

my @SECRETS;    # what partners sent: must never be in Redis in clear

# ------------------------------------------------ no key: Redis untouched

{
    my $clients0 = $n1->redis_clients;
    is(scalar @$clients0, 0,
       'after start, no node has connected to Redis (the connection is lazy)')
        or diag(explain $clients0);
    my $calls0 = $n1->redis_foreign_calls;
    my $cc0 = $n1->redis_info('clients')->{connected_clients};
    my $f0 = $n1->forwards;

    my $ok = 0;
    for my $i (1 .. 20) {
        $ok++ if $n1->create(body => '{"prompt":"no key"}')->status == 202;
        $ok++ if $n2->create(body => '{"prompt":"no key"}')->status == 202;
    }
    is($ok, 40, '20 requests without Idempotency-Key on each node: 202');
    is($n1->forwards - $f0, 40, '... each forwarded');
    is_deeply($n1->redis_foreign_calls, $calls0,
              '... INFO commandstats unchanged: no command sent to Redis');
    is($n1->redis_info('clients')->{connected_clients}, $cc0,
       '... INFO clients connected_clients unchanged');
    is(scalar @{ $n1->redis_clients }, 0, '... and still no connection from a node');
    is(scalar(my @k = fleet_keys()), 0, '... and no key in Redis');
}

# ------------------------------------------------ a first key per node

# the first keyed request of a node connects and may load the scripts:
# counted here, not asserted; the round trips are asserted after it
{
    my $e0 = evals();
    my $c0 = $n1->redis_commandstats;
    check_new($n1->idem('fleet-warm-1'), 'node 1: a first keyed request: 202');
    check_new($n2->idem('fleet-warm-2'), 'node 2: a first keyed request: 202');
    my $c1 = $n1->redis_commandstats;
    note('the first keyed request of each node cost Redis: '
         . join(', ', map { "$_ +" . ($c1->{$_}{calls} - ($c0->{$_} ? $c0->{$_}{calls} : 0)) }
                grep { ($c1->{$_}{calls} // 0) != ($c0->{$_} ? $c0->{$_}{calls} : 0) }
                sort keys %$c1));
    cmp_ok(scalar @{ $n1->redis_clients }, '>=', 2,
           'each node that made a keyed request has a connection to Redis');
    push @SECRETS, 'fleet-warm-1', 'fleet-warm-2';
}

# ------------------------------------------------ node 1 accepts, node 2 replays

my $first;
{
    my $body = '{"gender":"male","prompt":"fleet replay barista"}';
    push @SECRETS, 'fleet-replay-1', 'fleet replay barista';
    my $f0 = $n1->forwards;
    my $e0 = evals();
    my @k0 = fleet_keys();

    $first = $n1->idem('fleet-replay-1', body => $body);
    my $j = check_new($first, 'node 1: a new key: 202');
    is($n1->forwards - $f0, 1, 'forwarded once');
    is(evals() - $e0, 2, 'a new key: two round trips (claim before the forward, finish after)');
    my $exp = http_date($first->header('idempotency-expires'));
    my $in = ($exp // 0) - time;
    ok($in >= $TTL - 5 && $in <= $TTL + 2, "Idempotency-Expires is ttl ($TTL s) ahead")
        or diag($first->header('idempotency-expires') // '(none)');

    my @k1 = fleet_keys();
    my %old = map { $_ => 1 } @k0;
    my @new = grep { !$old{$_} } @k1;
    is(scalar @new, 1, 'one new key in Redis');
    like($new[0] // '', $KEY_RE, 'named <prefix>:<16 hex org hash>:<64 hex key digest>');
    if (@new) {
        my $pttl = $n1->redis('PTTL', $new[0]);
        ok(!ref $pttl && $pttl > ($TTL - 10) * 1000 && $pttl <= $TTL * 1000,
           "the finished entry expires in Redis with the ttl ($TTL s)")
            or diag("PTTL $pttl");
    }

    # node 1 has it cached: ten replays, no round trip
    $e0 = evals();
    my $same = 0;
    for (1 .. 10) {
        my $r = $n1->idem('fleet-replay-1', body => $body);
        $same++ if $r->status == 202 && $r->body eq $first->body
                   && ($r->header('idempotent-replayed') // '') eq 'true';
    }
    is($same, 10, 'node 1: ten replays, byte for byte');
    is(evals() - $e0, 0, 'node 1: a replay of an entry it has seen costs no round trip');

    # node 2 has not seen it: one round trip, then cached
    $e0 = evals();
    check_replay($n2->idem('fleet-replay-1', body => $body), $first,
                 'node 2: the key accepted on node 1 replays byte for byte');
    is(evals() - $e0, 1, 'node 2: its first replay costs exactly one round trip');
    $e0 = evals();
    check_replay($n2->idem('fleet-replay-1',
                    body => '{"prompt":"fleet replay barista","gender":"male"}'),
                 $first, 'node 2: keys in another order: the same request, a replay');
    $n2->idem('fleet-replay-1', body => $body) for 1 .. 4;
    check_replay($n2->idem('fleet-replay-1', body => $body), $first,
                 'node 2: a later replay, byte for byte');
    is(evals() - $e0, 0, 'node 2: later replays cost no round trip');
    is($n1->forwards - $f0, 1, 'still forwarded exactly once');
    my ($fw) = grep { ($_->{h}{'idempotency-key'}[0] // '') eq ($j->{jobId} // '-') }
               $n1->backend_requests;
    ok($fw, 'the one forward carries the jobId answered on both nodes');
}

# ------------------------------------------------ another request, same key

{
    my $f0 = $n1->forwards;
    reused($n2->idem('fleet-replay-1', body => '{"gender":"female","prompt":"fleet replay barista"}'),
           'node 2: same key, another body: 422 IDEMPOTENCY_KEY_REUSED');
    reused($n1->idem('fleet-replay-1', body => '{}'),
           'node 1: same key, another body: 422 IDEMPOTENCY_KEY_REUSED');
    reused($n2->idem('fleet-replay-1', project => P_MALE,
                     body => '{"gender":"male","prompt":"fleet replay barista"}'),
           'node 2: same key and body, another project: 422 IDEMPOTENCY_KEY_REUSED');

    # a node that never saw the key learns the mismatch from Redis
    push @SECRETS, 'fleet-mismatch-2';
    my $a = $n1->idem('fleet-mismatch-2', body => '{"ageRange":"adult"}');
    check_new($a, 'node 1: fleet-mismatch-2: 202');
    my $e0 = evals();
    reused($n2->idem('fleet-mismatch-2', body => '{"ageRange":"senior"}'),
           'node 2, which never saw the key: another body: 422 IDEMPOTENCY_KEY_REUSED');
    cmp_ok(evals() - $e0, '<=', 1, '... in at most one round trip');
    check_replay($n2->idem('fleet-mismatch-2', body => '{"ageRange":"adult"}'), $a,
                 'node 2: the same body still replays node 1\'s answer');
    is($n1->forwards - $f0, 1, 'no forward but fleet-mismatch-2\'s first');
}

# ------------------------------------------------ the org scopes a key

{
    my $f0 = $n1->forwards;
    my @k0 = fleet_keys();
    my $acme = $n1->idem('fleet-org-1');
    my $globex = $n2->idem('fleet-org-1', key => K_GLOBEX, project => P_GLOBEX);
    my $ja = check_new($acme, 'org_acme on node 1 with key fleet-org-1: 202');
    my $jg = check_new($globex, 'org_globex on node 2 with the same key: 202, a job of its own');
    isnt($ja->{jobId} // '', $jg->{jobId} // '', 'two orgs, one key: two jobs');
    is($n1->forwards - $f0, 2, 'both forwarded');
    check_replay($n2->idem('fleet-org-1'), $acme, 'org_acme replays its own job on node 2');
    check_replay($n1->idem('fleet-org-1', key => K_GLOBEX, project => P_GLOBEX), $globex,
                 'org_globex replays its own job on node 1');
    my %old = map { $_ => 1 } @k0;
    my @new = grep { !$old{$_} } fleet_keys();
    is(scalar @new, 2, 'two keys in Redis');
    my %orgs = map { (split /:/)[1] => 1 } @new;
    is(scalar keys %orgs, 2, '... namespaced by two org hashes');
    push @SECRETS, 'fleet-org-1';
}

# ------------------------------------------------ a key in flight

{
    my $body = '{"prompt":"fleet in flight"}';
    push @SECRETS, 'fleet-inflight-1', 'fleet in flight';
    my $f0 = $n1->forwards;
    $n1->set_backend(delay => 2);
    my @k0 = fleet_keys();
    my $sock = $n1->idem_async('fleet-inflight-1', body => $body);
    $n1->wait_backend_requests($f0 + 1);

    my $t0 = Time::HiRes::time();
    my $busy = $n2->idem('fleet-inflight-1', body => $body);
    check_error($busy, 409, 'IDEMPOTENCY_IN_PROGRESS', undef,
                'node 2: the key in flight on node 1: 409 IDEMPOTENCY_IN_PROGRESS');
    is($busy->header('retry-after'), 3, '... with Retry-After (busy): 3');
    cmp_ok(Time::HiRes::time() - $t0, '<', 1, '... answered at once, not after the forward');
    check_error($n1->idem('fleet-inflight-1', body => $body), 409,
                'IDEMPOTENCY_IN_PROGRESS', undef, 'node 1 itself: 409 too');
    reused($n2->idem('fleet-inflight-1', body => '{"prompt":"other"}'),
           'node 2: the key in flight, another body: 422 IDEMPOTENCY_KEY_REUSED');

    my %old = map { $_ => 1 } @k0;
    my @new = grep { !$old{$_} } fleet_keys();
    is(scalar @new, 1, 'the claim is one key in Redis');
    if (@new) {
        my $pttl = $n1->redis('PTTL', $new[0]);
        ok(!ref $pttl && $pttl > $LEASE * 1000 && $pttl <= $TTL * 1000,
           "the claim in flight carries its job for the key's life (ttl $TTL s), "
           . "its lease ($LEASE s) inside") or diag("PTTL $pttl");
    }

    $n1->set_backend(delay => 0);
    my $r1 = finish_async($sock, 10);
    check_new($r1, 'node 1: the forward done: 202');
    check_replay($n2->idem('fleet-inflight-1', body => $body), $r1,
                 'node 2: now a replay of it');
    is($n1->forwards - $f0, 1, 'forwarded exactly once');
}

# ------------------------------------------------ a failed forward releases the key

{
    my $body = '{"prompt":"fleet release"}';
    push @SECRETS, 'fleet-release-1', 'fleet release', 'fleet-release-2';
    my $f0 = $n1->forwards;
    $n1->set_backend(status => 500);
    check_error($n1->idem('fleet-release-1', body => $body), 502, 'UPSTREAM_ERROR', undef,
                'node 1: backend 500: 502 UPSTREAM_ERROR');
    my $failed_job = ($n1->backend_requests)[-1]{h}{'idempotency-key'}[0] // '';
    $n1->set_backend(status => 202);

    my $r2 = $n2->idem('fleet-release-1', body => $body);
    my $j2 = check_new($r2, 'node 2: the released key is taken as a new job: 202');
    isnt($j2->{jobId} // '', $failed_job, '... with new ids');
    is($n1->forwards - $f0, 2, 'forwarded again (two forwards in all)');
    check_replay($n1->idem('fleet-release-1', body => $body), $r2,
                 'node 1: now replays node 2\'s job');

    $n1->set_backend(status => 404);
    check_error($n2->idem('fleet-release-2', body => $body), 404, 'NOT_FOUND', undef,
                'node 2: backend 404: 404 NOT_FOUND');
    $n1->set_backend(status => 202);
    check_new($n1->idem('fleet-release-2', body => $body),
              'node 1: the key released by the 404 is a new job: 202');
    is($n1->forwards - $f0, 4, 'four forwards in all');
}

# ------------------------------------------------ rejected requests leave nothing

{
    my @k0 = fleet_keys();
    my $e0 = evals();
    push @SECRETS, 'fleet-rejected-1';
    is($n2->idem('fleet-rejected-1', body => '{"name":"x"}')->status, 422,
       'a body rejected (422 VALIDATION) with a new key');
    is($n2->idem('fleet-rejected-1', key => K_READ)->status, 403,
       'a key without the scope (403)');
    is($n1->idem('fleet-rejected-1', project => P_UNKNOWN)->status, 404,
       'an unknown project (404)');
    is(evals() - $e0, 0, 'no round trip for requests rejected before the lookup');
    is_deeply([fleet_keys()], \@k0, 'and no key in Redis');
    check_new($n1->idem('fleet-rejected-1'), 'the key is then free: 202');
}

# ------------------------------------------------ nothing in clear in Redis

{
    my @keys = $n1->redis_keys('*');
    my @bad = grep { $_ !~ $KEY_RE } @keys;
    is(scalar @bad, 0, 'every key Redis holds is <prefix>:<16 hex>:<64 hex>')
        or diag(join "\n", @bad);
    my $all = join "\n", @keys;
    for my $k (@keys) {
        my $type = $n1->redis('TYPE', $k);
        my $v = $type eq 'string' ? $n1->redis('GET', $k)
              : $type eq 'hash'   ? join("\n", @{ $n1->redis('HGETALL', $k) || [] })
              : $n1->redis('DUMP', $k);
        $all .= "\n" . ($v // '') unless ref $v eq 'HASH';
    }
    my @seen = grep { index($all, $_) >= 0 }
               (@SECRETS, K_WRITE, K_GLOBEX, 'org_acme', 'org_globex', P_FEMALE, P_GLOBEX);
    is(scalar @seen, 0, 'no Idempotency-Key, prompt, API key, org or projectId in clear '
                        . 'in a key or a value') or diag("found: @seen");
}

# ------------------------------------------------ Redis loses its data

{
    my $body = '{"prompt":"fleet flush"}';
    push @SECRETS, 'fleet-flush-1';
    my $r1 = $n1->idem('fleet-flush-1', body => $body);
    check_new($r1, 'node 1: fleet-flush-1: 202');
    is($n1->redis('FLUSHALL'), 'OK', 'Redis loses its data (FLUSHALL)');
    my $e0 = evals();
    my $f0 = $n1->forwards;
    check_replay($n1->idem('fleet-flush-1', body => $body), $r1,
                 'node 1 still replays the entry from its zone');
    is(evals() - $e0, 0, '... with no round trip');
    is($n1->forwards, $f0, '... and no forward');
    # Node 2 never saw the key: with Redis's data gone it would take the key
    # as a new job.  That is Redis's durability (persistence, replicas), not
    # the gateway's: not asserted here.
}

# ------------------------------------------------ Redis forgets the scripts

# SCRIPT FLUSH, as after a failover to a server that never saw them: the
# nodes' EVALSHA get NOSCRIPT, and new keys must still go through (at once,
# or after a reconnect that loads the scripts again)
{
    is($n1->redis('SCRIPT', 'FLUSH'), 'OK', 'Redis forgets the scripts (SCRIPT FLUSH)');
    my %got;
    my $t0 = Time::HiRes::time();
    my $first_status;
    for my $node ($n1, $n2) {
        my $ok;
        while (Time::HiRes::time() - $t0 < 3) {
            my $r = $node->idem('fleet-noscript-' . ($node == $n1 ? 1 : 2) . '-' . int(rand 1e9));
            $first_status //= $r->status;
            $got{$r->status}++;
            if ($r->status == 202) { $ok = 1; last; }
            Time::HiRes::sleep(0.1);
        }
        ok($ok, 'node ' . ($node == $n1 ? 1 : 2) . ': new keys are accepted again after SCRIPT FLUSH');
    }
    is($first_status, 202, 'the first new key after SCRIPT FLUSH is accepted (NOSCRIPT handled)')
        or diag('answers: ' . join ', ', map { "$_ x$got{$_}" } sort keys %got);
}

# ------------------------------------------------ counters

{
    my ($s1, $s2) = (scalar $n1->stats, scalar $n2->stats);
    note('node 1 stats: ' . json_encode($s1));
    note('node 2 stats: ' . json_encode($s2));
    for my $f (qw(redisOps redisFailures redisFallbacks redisStale)) {
        ok(exists $s1->{$f} && exists $s2->{$f}, "stats carry $f");
    }
    cmp_ok(($s1->{redisOps} // 0) + ($s2->{redisOps} // 0), '>', 0, 'redisOps counted');
    is(($s1->{redisFailures} // -1) + ($s2->{redisFailures} // -1), 0, 'no redisFailures');
    is(($s1->{redisFallbacks} // -1) + ($s2->{redisFallbacks} // -1), 0, 'no redisFallbacks');
    is(($s1->{redisStale} // -1) + ($s2->{redisStale} // -1), 0, 'no redisStale');
    is($s1->{inflight}, 0, 'node 1: nothing left in flight');
    is($s2->{inflight}, 0, 'node 2: nothing left in flight');
}

for my $n ($n1, $n2) {
    $n->check_log_clean;
    my @e = $n->log_lines(qr/\[error\].*Redis/);
    is(scalar @e, 0, 'no [error] line about Redis in ' . ($n == $n1 ? 'node 1' : 'node 2') . '\'s log')
        or diag(join "\n", @e[0 .. ($#e < 9 ? $#e : 9)]);
}

done_testing;
