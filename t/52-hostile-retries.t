#!/usr/bin/perl

# CONTRACT 3, README "Idempotency": a retry of the same bytes is recognised
# before its body is parsed (a keyed hash of the body's bytes, the
# configuration, the location and the project).  This file attacks that
# fast path from outside, as a partner, an attacker and an operator would:
# exact bytes over other framings (1-byte chunks, a body spilled to a
# temporary file), near misses, other paths and orgs, requests that must be
# refused before any lookup (size, type, authentication, scope, method),
# parallel retries while the first is in flight, a reload, a key revoked by
# a reload, kill -9 of every nginx process with state=, a full zone, an
# expired entry, a dead backend, a released key, and many keys of one org.
#
# Where nginx logs at debug level (the harness's default, nginx built
# --with-debug), the module's debug line "a retry of the same bytes,
# replayed" tells whether the fast path answered: it must for an exact
# retry, and must not after a reload or a restart (README: those go the
# whole way).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $T0 = Time::HiRes::time();

my $FAST_RE = qr/influencers zone "jobs": a retry of the same bytes, replayed/;

# ------------------------------------------------------------ helpers

sub fast_count {
    my ($t) = @_;
    my $log = $t->error_log;
    my $n = () = $log =~ /$FAST_RE/g;
    return $n;
}

# is the fast path observable (debug lines in error.log)?
sub debug_on {
    my ($t) = @_;
    return $t->error_log =~ /\[debug\]/ ? 1 : 0;
}

sub ones { my ($body) = @_; return [(1) x length $body]; }

sub replayed { my ($r) = @_; return ($r->header('idempotent-replayed') // '') eq 'true'; }

# a refusal: the error, never marked replayed, never the job's body
sub refused {
    my ($r, $status, $code, $first, $name) = @_;
    check_error($r, $status, $code, undef, $name);
    ok(!defined $r->header('idempotent-replayed'), "$name: not marked replayed")
        or diag($r->raw);
    my ($job) = $first->body =~ /"jobId":"(job_[^"]+)"/;
    ok(index($r->raw, $job // 'job_') < 0, "$name: the job's id is not disclosed")
        if defined $job;
    ok(!defined $r->header('location'), "$name: no Location");
}

# a replay answered by the fast path ($fast), or one that must go the
# whole way (parse, fingerprint, lookup); which, when the debug log shows it
my $DEBUG;
sub replay_via {
    my ($fast, $t, $send, $first, $name) = @_;
    my $f0 = fast_count($t);
    my $r = $send->();
    check_replay($r, $first, $name, status => 202);
    if ($DEBUG) {
        is(fast_count($t), $f0 + ($fast ? 1 : 0), $fast
           ? "$name: answered by the same-bytes path"
           : "$name: not taken for a retry of the same bytes");
    }
    return $r;
}

sub fast_replay { return replay_via(1, @_) }
sub full_replay { return replay_via(0, @_) }

# ================================================================ instance A

my $t = InfTest->new(log_level => 'debug');
$t->write_directory;
$t->conf($t->default_conf(
    workers  => 2,
    zone     => 'zone=jobs:1m state=%%TESTDIR%%/jobs.state',
    location => "influencers_retry_after 9s;\n"
              . "            influencers_busy_retry_after 2s;",
    server   => STATS_LOCATION,
));
$t->start_backend;
$t->run;
is(scalar(my @w = $t->worker_pids), 2, 'a master and 2 workers');

my $probe = $t->idem(undef, body => '{}');
is($probe->status, 202, 'a first request without a key: 202');
$DEBUG = debug_on($t);
note($DEBUG ? 'debug log on: the same-bytes path is observed'
            : 'no debug log: the same-bytes path is not observed directly');

my %keep;   # key => [body, first answer, %opts] replayed again after the crash

# ------------------------------------------------------------ 1. exact bytes

my $B1 = '{"gender":"male","ageRange":"adult","prompt":"hostile retry one"}';
my $first1;
{
    my $n0 = $t->forwards();
    $first1 = $t->idem('hk-1', body => $B1);
    my $j = check_new_job($first1, '1: key hk-1 with body B: 202', retry_after => 9);
    is($t->forwards(), $n0 + 1, '1: forwarded once');
    is(($t->backend_requests)[-1]{h}{'idempotency-key'}[0], $j->{jobId},
       '1: the forward carries the jobId');
    for my $i (1 .. 3) {
        fast_replay($t, sub { $t->idem('hk-1', body => $B1) }, $first1,
                    "1: the exact bytes again ($i): a replay");
    }
    is($t->forwards(), $n0 + 1, '1: replays forward nothing');
    $keep{'hk-1'} = [$B1, $first1];
}

# ------------------------------------------------------------ 2. chunked, 1-byte chunks

{
    my $n0 = $t->forwards();
    fast_replay($t, sub { $t->idem('hk-1', body => $B1, chunked => ones($B1), timeout => 10) },
                $first1, '2: the same bytes in 1-byte chunks: a replay');
    fast_replay($t, sub { $t->idem('hk-1', body => $B1, chunked => [7, 1, 30, 3], timeout => 10) },
                $first1, '2: the same bytes in uneven chunks: a replay');

    # accepted in 1-byte chunks first, replayed with Content-Length
    my $B2 = '{"prompt":"chunked first","gender":"female"}';
    my $f2 = $t->idem('hk-2', body => $B2, chunked => ones($B2), timeout => 10);
    check_new_job($f2, '2: key hk-2 accepted from 1-byte chunks: 202', retry_after => 9);
    fast_replay($t, sub { $t->idem('hk-2', body => $B2) }, $f2,
                '2: then the same bytes with Content-Length: a replay');
    fast_replay($t, sub { $t->idem('hk-2', body => $B2, chunked => ones($B2), timeout => 10) },
                $f2, '2: and in 1-byte chunks again: a replay');
    $keep{'hk-2'} = [$B2, $f2];

    # a body whose 1-byte chunks (about 18 KB framed) spill to a temporary
    # file: the bytes hashed are the file's
    my $pad = ' ' x 3000;
    my $BL = qq({"prompt":"spilled body",$pad"gender":"male"});
    my $BLx = qq({"prompt":"spilled body",$pad"gender":"mala"});
    my $spill = qr/a client request body is buffered to a temporary file/;
    my $sp0 = $t->count_log($spill);
    my $fl = $t->idem('hk-2l', body => $BL, chunked => ones($BL), timeout => 15);
    cmp_ok($t->count_log($spill), '>', $sp0, '2: (that body went through a temporary file)');
    check_new_job($fl, '2: a 3 KB body in 1-byte chunks (through a temp file): 202',
                  retry_after => 9);
    fast_replay($t, sub { $t->idem('hk-2l', body => $BL) }, $fl,
                '2: its exact bytes with Content-Length: a replay');
    fast_replay($t, sub { $t->idem('hk-2l', body => $BL, chunked => ones($BL), timeout => 15) },
                $fl, '2: its exact bytes in 1-byte chunks again: a replay');
    my $r = $t->idem('hk-2l', body => $BLx, chunked => ones($BLx), timeout => 15);
    check_validation($r, 'Invalid body.', { fieldErrors => { gender => [
            "Invalid enum value. Expected 'male' | 'female' | 'non_binary'"] } },
        '2: the same length, one byte off at the very end: validated (422 VALIDATION), '
        . 'not a replay');
    is($t->forwards(), $n0 + 2, '2: two new keys, two forwards; no replay forwarded');
}

# ------------------------------------------------------------ 3. same meaning, other bytes; other requests

{
    my $n0 = $t->forwards();
    full_replay($t, sub { $t->idem('hk-1', body =>
            qq( {\n  "prompt" : "hostile retry one",\t"ageRange":"adult", "gender":"male" } )) },
        $first1, '3: other whitespace and key order: a replay (the whole way)');
    full_replay($t, sub { $t->idem('hk-1', body => "$B1\n") }, $first1,
        '3: one trailing newline: a replay (the whole way)');
    full_replay($t, sub { $t->idem('hk-1', body =>
            '{"gender":"male","ageRange":"adult","prompt":"hostile retry \u006fne"}') },
        $first1, '3: an escaped character: a replay (the whole way)');
    check_replay($t->idem('hk-1', body => $B1,
                          path => '/v1/projects/' . uc(P_FEMALE) . '/influencers'),
                 $first1, '3: the same bytes, projectId in uppercase: a replay', status => 202);

    my $reused = sub {
        my ($r, $name) = @_;
        refused($r, 422, 'IDEMPOTENCY_KEY_REUSED', $first1, $name);
        unlike($r->body, qr/fieldErrors|formErrors/, "$name: no fieldErrors");
    };
    $reused->($t->idem('hk-1', body =>
                '{"gender":"male","ageRange":"adult","prompt":"hostile retry onE"}'),
              '3: one byte changed (same length): 422 IDEMPOTENCY_KEY_REUSED');
    $reused->($t->idem('hk-1', body => '{"gender":"female","ageRange":"adult","prompt":"hostile retry one"}'),
              '3: another body on the key: 422 IDEMPOTENCY_KEY_REUSED');
    $reused->($t->idem('hk-1', body => $B1, project => P_MALE),
              '3: the same bytes on the key to another project: 422 IDEMPOTENCY_KEY_REUSED');
    $reused->($t->idem('hk-1', body => $B1, project => P_MALE, chunked => ones($B1),
                       timeout => 10),
              '3: ... and in 1-byte chunks: 422 IDEMPOTENCY_KEY_REUSED');
    is($t->forwards(), $n0, '3: nothing forwarded');

    # the same key and bytes from another org: its own new job
    my $g = $t->idem('hk-1', key => K_GLOBEX, project => P_GLOBEX, body => $B1);
    my $jg = check_new_job($g, '3: org_globex, same key, same bytes: a new job, 202',
                           retry_after => 9);
    isnt($jg->{jobId} // '', ($first1->json || {})->{jobId} // '-',
         '3: org_globex gets a job of its own');
    is($t->forwards(), $n0 + 1, '3: and it is forwarded');
    fast_replay($t, sub { $t->idem('hk-1', key => K_GLOBEX, project => P_GLOBEX, body => $B1) },
                $g, '3: org_globex\'s retry replays its own job');
    fast_replay($t, sub { $t->idem('hk-1', body => $B1) }, $first1,
                '3: org_acme\'s retry still replays its own');
    # another API key of the same org shares the cache
    fast_replay($t, sub { $t->idem('hk-1', key => K_MULTI, body => $B1) }, $first1,
                '3: another write key of org_acme, same bytes: the org\'s replay');
    is($t->forwards(), $n0 + 1, '3: replays forward nothing');
}

# ------------------------------------------------------------ 4. refusals before the lookup

{
    my $n0 = $t->forwards();
    my $big = '{"prompt":"x",' . (' ' x 5000) . '}';
    refused($t->idem('hk-1', body => $big), 413, 'PAYLOAD_TOO_LARGE', $first1,
            '4: key hk-1, a body over influencers_body_limit: 413');
    refused($t->idem('hk-1', body => $big, chunked => [1000] x 6, timeout => 10),
            413, 'PAYLOAD_TOO_LARGE', $first1,
            '4: key hk-1, an over-limit body in chunks: 413');
    refused($t->idem('hk-1', body => $B1, ctype => 'text/plain'), 415,
            'UNSUPPORTED_MEDIA_TYPE', $first1,
            '4: the exact bytes with Content-Type text/plain: 415');
    refused($t->idem('hk-1', body => $B1, ctype => 'application/json; charset=latin1'), 415,
            'UNSUPPORTED_MEDIA_TYPE', $first1,
            '4: the exact bytes with charset=latin1: 415');
    refused($t->idem('hk-1', body => $B1, ctype => undef), 415,
            'UNSUPPORTED_MEDIA_TYPE', $first1,
            '4: the exact bytes without Content-Type: 415');
    refused($t->idem('hk-1', body => $B1, ctype => 'text/plain', chunked => ones($B1),
                     timeout => 10),
            415, 'UNSUPPORTED_MEDIA_TYPE', $first1,
            '4: the exact bytes in 1-byte chunks, text/plain (type checked after the read): 415');
    refused($t->idem('hk-1', body => $B1, ctype => undef, chunked => [10, 10, 100]),
            415, 'UNSUPPORTED_MEDIA_TYPE', $first1,
            '4: the exact bytes chunked without Content-Type: 415');
    refused($t->idem('hk-1', body => $B1, key => K_UNKNOWN), 401, 'UNAUTHENTICATED',
            $first1, '4: the exact bytes with an unknown API key: 401');
    refused($t->idem('hk-1', body => $B1, auth => undef), 401, 'UNAUTHENTICATED',
            $first1, '4: the exact bytes without Authorization: 401');
    refused($t->idem('hk-1', body => $B1, auth => 'Basic ' . K_WRITE), 401,
            'UNAUTHENTICATED', $first1,
            '4: the exact bytes with a Basic Authorization: 401');
    refused($t->idem('hk-1', body => $B1, auth => 'Bearer ' . K_WRITE . 'x'), 401,
            'UNAUTHENTICATED', $first1,
            '4: the exact bytes with the API key plus one character: 401');
    refused($t->idem('hk-1', body => $B1, key => K_READ), 403, 'FORBIDDEN_SCOPE',
            $first1, '4: the exact bytes with a read-only key of the same org: 403');
    refused($t->idem('hk-1', body => $B1, key => K_NOSCOPE), 403, 'FORBIDDEN_SCOPE',
            $first1, '4: the exact bytes with a key without scopes of the same org: 403');
    refused($t->idem('hk-1', body => $B1, key => K_GLOBEX), 404, 'NOT_FOUND',
            $first1, '4: the exact bytes, org_globex\'s key on org_acme\'s project: 404');
    for my $m (qw(PUT PATCH)) {
        refused($t->idem('hk-1', body => $B1, method => $m), 405, 'METHOD_NOT_ALLOWED',
                $first1, "4: the exact bytes with $m: 405");
    }
    {
        my $r = $t->idem('hk-1', body => $B1, headers => ['Idempotency-Key' => 'hk-1']);
        is($r->status, 422, '4: two Idempotency-Key lines with the exact bytes: 422')
            or diag($r->summary);
        ok(!replayed($r), '4: ... not a replay');
    }
    is($t->forwards(), $n0, '4: nothing forwarded');
    fast_replay($t, sub { $t->idem('hk-1', body => $B1) }, $first1,
                '4: after all of these, the exact bytes still replay');
}

# ------------------------------------------------------------ 5. parallel retries in flight

{
    my $B5 = '{"prompt":"slow and parallel"}';
    my $N = 8;
    my $n0 = $t->forwards();
    my $s0 = $t->stats();
    $t->set_backend(delay => 1.2);
    my $start = Time::HiRes::time();
    # $N connections, all sent at once: one claim, the rest in flight
    my @socks = map { $t->idem_async('hk-5', body => $B5) } 1 .. $N;
    my @fw = $t->wait_backend_requests($n0 + 1);
    is(scalar @fw, $n0 + 1, '5: the first reached the (slow) backend');
    # more retries of the same bytes while the first is in flight, one of
    # them in 1-byte chunks
    my @late = map { $t->idem('hk-5', body => $B5) } 1 .. 3;
    push @late, $t->idem('hk-5', body => $B5, chunked => ones($B5), timeout => 10);
    my @a = map { finish_async($_, 10) } @socks;
    ok(Time::HiRes::time() - $start < 12, '5: bounded in time');
    $t->set_backend;

    is(scalar(grep { $_->timed_out } @a), 0, '5: no answer timed out');
    my @acc = grep { $_->status == 202 } @a;
    my @busy = grep { $_->status == 409 } @a;
    is(scalar @acc, 1, "5: $N parallel requests: exactly one 202")
        or diag(join "\n", map { $_->summary } @a);
    is(scalar @busy, $N - 1, "5: the other " . ($N - 1) . ' are 409');
    ok(@acc && !replayed($acc[0]), '5: the 202 is the original, not a replay');
    is(scalar(grep { (($_->json || {})->{error}{code} // '') eq 'IDEMPOTENCY_IN_PROGRESS'
                     && ($_->header('retry-after') // '') eq '2'
                     && !replayed($_) } @busy, @late),
       $N - 1 + @late, '5: every 409 is IDEMPOTENCY_IN_PROGRESS with Retry-After: 2');
    is(scalar(grep { $_->status == 409 } @late), scalar @late,
       '5: retries while in flight (one in 1-byte chunks): all 409');
    Time::HiRes::sleep(0.3);
    is($t->forwards(), $n0 + 1, '5: exactly one forward');

    my $first = $acc[0] || $a[0];
    # after it finished: parallel retries, all replays
    my @socks2 = map { $t->idem_async('hk-5', body => $B5) } 1 .. $N;
    my @b = map { finish_async($_, 10) } @socks2;
    is(scalar(grep { $_->status == 202 && replayed($_) && $_->body eq $first->body
                     && ($_->header('location') // '') eq ($first->header('location') // '-') }
              @b),
       $N, "5: then $N parallel retries: all replays, byte-identical, same Location")
        or diag(join "\n", map { $_->summary } @b);
    fast_replay($t, sub { $t->idem('hk-5', body => $B5) }, $first,
                '5: and one more: a replay');
    is($t->forwards(), $n0 + 1, '5: still exactly one forward');
    my $s = $t->stats();
    is($s->{inflight}, 0, '5: stats: nothing in flight');
    is(($s->{conflicts} // 0) - ($s0->{conflicts} // 0), $N - 1 + @late,
       '5: stats: conflicts counts the 409s');
    $keep{'hk-5'} = [$B5, $first];
}

# ------------------------------------------------------------ 6. reload

{
    my $B6 = '{"prompt":"before the reload","gender":"non_binary"}';
    my $n0 = $t->forwards();
    my $f6 = $t->idem('hk-6', body => $B6);
    check_new_job($f6, '6: key hk-6 accepted: 202', retry_after => 9);
    ok($t->reload, '6: nginx -s reload (HUP), a new generation of workers');
    full_replay($t, sub { $t->idem('hk-6', body => $B6) }, $f6,
                '6: after the reload, the exact bytes: a replay (the whole way)');
    check_replay($t->idem('hk-6', body => $B6), $f6, '6: and again: a replay', status => 202);
    check_replay($t->idem('hk-1', body => $B1), $first1,
                 '6: an older key\'s exact bytes: a replay', status => 202);
    check_error($t->idem('hk-6', body => '{"prompt":"before the reload"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, '6: another body after the reload: 422');
    is($t->forwards(), $n0 + 1, '6: nothing forwarded again');
    $keep{'hk-6'} = [$B6, $f6];

    # the operator revokes the API key: its exact-bytes retry is refused
    $t->write_directory(keys => [grep { $_->{key} ne K_WRITE } @{ InfTest::default_keys() }]);
    ok($t->reload, '6: a reload with K_WRITE removed from the directory');
    refused($t->idem('hk-6', body => $B6), 401, 'UNAUTHENTICATED', $f6,
            '6: the revoked key\'s exact-bytes retry: 401');
    refused($t->idem('hk-1', body => $B1, chunked => ones($B1), timeout => 10), 401,
            'UNAUTHENTICATED', $first1,
            '6: ... in 1-byte chunks too: 401');
    check_replay($t->idem('hk-6', body => $B6, key => K_MULTI), $f6,
                 '6: another write key of the org: still the org\'s replay', status => 202);
    $t->write_directory;
    ok($t->reload, '6: the key restored by a reload');
    check_replay($t->idem('hk-6', body => $B6), $f6, '6: the restored key: a replay',
                 status => 202);
    is($t->forwards(), $n0 + 1, '6: nothing forwarded by any of this');
}

# ------------------------------------------------------------ 9. dead backend, released keys

{
    my $n0 = $t->forwards();
    my $B9 = '{"prompt":"before the backend died"}';
    my $f9 = $t->idem('hk-9', body => $B9);
    check_new_job($f9, '9: key hk-9 accepted: 202', retry_after => 9);
    $t->stop_backend;
    my $n1 = $t->forwards();
    check_error($t->idem('hk-9-probe', body => $B9), 502, 'UPSTREAM_ERROR', undef,
                '9: the backend is down: a new key gets 502');
    fast_replay($t, sub { $t->idem('hk-9', body => $B9) }, $f9,
                '9: backend down, the exact bytes of hk-9: a replay, 202');
    full_replay($t, sub { $t->idem('hk-1', body => $B1, chunked => ones($B1), timeout => 10) },
                $first1, '9: backend down, hk-1 (accepted before the reloads) in 1-byte '
                . 'chunks: a replay, 202');
    full_replay($t, sub { $t->idem('hk-9', body => " $B9") }, $f9,
                '9: backend down, hk-9 with other whitespace: a replay, 202');
    # the failed key was released: its same bytes are a new job, not a replay
    check_error($t->idem('hk-9-probe', body => $B9), 502, 'UPSTREAM_ERROR', undef,
                '9: the failed key retried with the same bytes: 502 again, not 409 or a replay');
    $t->start_backend;
    is($t->forwards(), $n1, '9: nothing forwarded while the backend was down');
    my $p = $t->idem('hk-9-probe', body => $B9);
    my $jp = check_new_job($p, '9: backend back, the released key\'s same bytes: a new job',
                           retry_after => 9);
    isnt($jp->{jobId} // '', ($f9->json || {})->{jobId} // '-', '9: with ids of its own');
    is($t->forwards(), $n1 + 1, '9: and it is forwarded');
    fast_replay($t, sub { $t->idem('hk-9-probe', body => $B9) }, $p,
                '9: its retry then replays it');
    is($t->forwards(), $n0 + 2, '9: two jobs forwarded in all');
    $keep{'hk-9'} = [$B9, $f9];
}

# ------------------------------------------------------------ 10. many keys of one org

{
    my $N = 300;
    my $n0 = $t->forwards();
    my (%first, %body);
    my $ok = 0;
    for my $i (1 .. $N) {
        # half the keys share one body: same bytes, other keys
        $body{$i} = $i % 2 ? '{"prompt":"one body for many keys"}'
                           : qq({"prompt":"many keys $i","gender":"male"});
        my $r = $t->idem("many-$i", body => $body{$i});
        $first{$i} = $r;
        $ok++ if $r->status == 202 && !replayed($r) && $r->body =~ ACCEPT_RE;
    }
    is($ok, $N, "10: $N distinct keys of org_acme: $N new jobs");
    my %jobs = map { ((($first{$_}->json || {})->{jobId}) // "none-$_") => 1 } 1 .. $N;
    is(scalar keys %jobs, $N, "10: $N distinct jobIds");
    is($t->forwards(), $n0 + $N, "10: $N forwards");

    my @sample = grep { $_ % 7 == 0 || $_ <= 3 || $_ >= $N - 2 } 1 .. $N;
    my $f0 = fast_count($t);
    my ($good, @bad) = (0);
    for my $i (@sample) {
        my $r = $t->idem("many-$i", body => $body{$i});
        if ($r->status == 202 && replayed($r) && $r->body eq $first{$i}->body
            && ($r->header('location') // '') eq ($first{$i}->header('location') // '-')
            && ($r->header('idempotency-expires') // '')
               eq ($first{$i}->header('idempotency-expires') // '-')) {
            $good++;
        } else {
            push @bad, "many-$i: " . $r->summary;
        }
    }
    is($good, scalar @sample, '10: ' . scalar(@sample)
       . ' sampled retries: each replays its own job, byte for byte')
        or diag(join "\n", @bad[0 .. ($#bad < 5 ? $#bad : 5)]);
    is(fast_count($t), $f0 + @sample, '10: all by the same-bytes path') if $DEBUG;

    # a key with another key's bytes: a reuse, never the other's job
    my $cross = 0;
    for my $i (2, 4, 100, 298) {
        my $j = $i == 298 ? 2 : $i + 2;
        my $r = $t->idem("many-$i", body => $body{$j});
        $cross++ if $r->status == 422
                    && (($r->json || {})->{error}{code} // '') eq 'IDEMPOTENCY_KEY_REUSED';
    }
    is($cross, 4, '10: a key sent another key\'s body: 422 IDEMPOTENCY_KEY_REUSED');
    # keys sharing bytes: each its own job
    my $r1 = $t->idem('many-1', body => $body{1});
    my $r3 = $t->idem('many-3', body => $body{3});
    ok(replayed($r1) && replayed($r3) && $r1->body eq $first{1}->body
       && $r3->body eq $first{3}->body && $r1->body ne $r3->body,
       '10: two keys with the same bytes replay two different jobs');
    is($t->forwards(), $n0 + $N, '10: no retry forwarded');
    $keep{"many-$_"} = [$body{$_}, $first{$_}] for 1, 2, 150, $N;
}

# ------------------------------------------------------------ 7. kill -9 with state=

{
    my $B7 = '{"prompt":"survives a crash","ageRange":"senior"}';
    my $f7 = $t->idem('hk-7', body => $B7);
    check_new_job($f7, '7: key hk-7 accepted: 202', retry_after => 9);
    $keep{'hk-7'} = [$B7, $f7];
    Time::HiRes::sleep(2.3);
    my $n0 = $t->forwards();
    ok($t->kill9, '7: kill -9 of the master and both workers');
    ok(!$t->nginx_alive, '7: nginx is gone');
    $t->run;
    like(($t->log_lines(qr/entries loaded from/))[-1] // '', qr/\d+ entries loaded from/,
         '7: started again: entries loaded from the state file');
    full_replay($t, sub { $t->idem('hk-7', body => $B7) }, $f7,
                '7: after the crash, hk-7\'s exact bytes: a replay (the whole way)');
    check_replay($t->idem('hk-7', body => $B7, chunked => ones($B7), timeout => 10), $f7,
                 '7: ... in 1-byte chunks: a replay', status => 202);
    my $ok = 0;
    my @bad;
    for my $k (sort keys %keep) {
        my ($b, $r1) = @{ $keep{$k} };
        my $r = $t->idem($k, body => $b);
        if ($r->status == 202 && replayed($r) && $r->body eq $r1->body
            && ($r->header('location') // '') eq ($r1->header('location') // '-')
            && ($r->header('retry-after') // '') eq ($r1->header('retry-after') // '-')
            && ($r->header('idempotency-expires') // '')
               eq ($r1->header('idempotency-expires') // '-')) {
            $ok++;
        } else {
            push @bad, "$k: " . $r->summary;
        }
    }
    is($ok, scalar keys %keep, '7: every earlier key (' . scalar(keys %keep)
       . ') replays byte for byte after the crash')
        or diag(join "\n", @bad);
    check_error($t->idem('hk-7', body => '{"prompt":"survives a crash"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef, '7: another body after the crash: 422');
    refused($t->idem('hk-7', body => $B7, key => K_READ), 403, 'FORBIDDEN_SCOPE', $f7,
            '7: a read-only key with the exact bytes after the crash: 403');
    Time::HiRes::sleep(0.2);
    is($t->forwards(), $n0, '7: nothing new forwarded');
}

$t->check_log_clean;
$t->cleanup;

# ================================================================ instance B: 8. a full zone

{
    my $TTL = 6;
    my $z = InfTest->new(log_level => 'debug');
    $z->write_directory;
    $z->conf($z->default_conf(
        workers  => 2,
        zone     => "zone=jobs:32k ttl=${TTL}s org_share=100%",
        location => 'influencers_busy_retry_after 3s;',
        server   => STATS_LOCATION,
    ));
    $z->start_backend;
    $z->run;

    my $R = $z->stats()->{records} // 0;
    ok($R >= 8 && $R < 200, "8: a 32k zone holds $R records");

    my $t0 = Time::HiRes::time();
    my (%first, %body, $full);
    my $i = 0;
    while ($i < $R + 10) {
        $i++;
        $body{$i} = qq({"prompt":"fill $i"});
        my $r = $z->idem("full-$i", body => $body{$i});
        if ($r->status == 503) {
            $full = $r;
            last;
        }
        $first{$i} = $r;
    }
    my $filled = $i - 1;
    my $t1 = Time::HiRes::time();
    ok($full, "8: the zone filled: 503 after $filled keys");
    is($filled, $R, '8: ... exactly when every record holds an entry');
    check_error($full || InfTest::Response->failed('none'), 503, 'CAPACITY', undef,
                '8: the key that did not fit: 503 CAPACITY');
    is(scalar(grep { $first{$_}->status == 202 && !replayed($first{$_}) } keys %first),
       $filled, "8: the $filled keys before: all new jobs");
    my $n0 = $z->forwards();

    fast_replay($z, sub { $z->idem('full-1', body => $body{1}) }, $first{1},
                '8: zone full, the first key\'s exact bytes: a replay');
    fast_replay($z, sub { $z->idem('full-2', body => $body{2}, chunked => ones($body{2}),
                                   timeout => 10) },
                $first{2}, '8: zone full, the second key\'s bytes in 1-byte chunks: a replay');
    my $mid = int($filled / 2) || 1;
    fast_replay($z, sub { $z->idem("full-$mid", body => $body{$mid}) }, $first{$mid},
                "8: zone full, key ${mid}'s exact bytes: a replay");
    full_replay($z, sub { $z->idem('full-3', body => " $body{3} ") }, $first{3},
                '8: zone full, another key with other whitespace: a replay');
    my $r = $z->idem('full-new', body => $body{1});
    check_error($r, 503, 'CAPACITY', undef,
                '8: zone full, a new key with an existing key\'s bytes: 503 CAPACITY');
    is($r->header('retry-after'), 3, '8: ... with Retry-After');
    check_error($z->idem('full-1', body => '{"prompt":"fill one"}'), 422,
                'IDEMPOTENCY_KEY_REUSED', undef,
                '8: zone full, another body on the first key: 422');
    is($z->forwards(), $n0, '8: nothing forwarded while full');
    my $s = $z->stats();
    is($s->{keyed}, $R, '8: stats: every record still an unexpired entry');
    ok(Time::HiRes::time() < $t0 + $TTL, "8: (all of this within the ttl of $TTL s)")
        or diag(sprintf('filled in %.2f s', $t1 - $t0));

    # the ttl passed: the same bytes are a new job, never the old answer
    sleep_until($t1 + $TTL + 0.5);
    my $e = $z->idem('full-1', body => $body{1});
    my $je = check_new_job($e, '8: after the ttl, the first key\'s exact bytes: a new job',
                           retry_after => 5);
    isnt($je->{jobId} // '', ($first{1}->json || {})->{jobId} // '-',
         '8: ... with ids of its own');
    is($z->forwards(), $n0 + 1, '8: ... forwarded');
    fast_replay($z, sub { $z->idem('full-1', body => $body{1}) }, $e,
                '8: and its retry replays the new job');
    check_new_job($z->idem('full-new-2', body => '{}'),
                  '8: a new key again: 202 (expired entries made room)', retry_after => 5);

    $z->check_log_clean;
    $z->cleanup;
}

my $elapsed = Time::HiRes::time() - $T0;
note(sprintf('%.1f s in all', $elapsed));
ok($elapsed < 60, sprintf('the whole file ran in under 60 s (%.1f s)', $elapsed));

done_testing;
