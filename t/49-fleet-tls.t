#!/usr/bin/perl

# ISSUE 17: influencers_redis over TLS (ssl=on and its ssl_* parameters),
# against real redis-servers that speak TLS only (t/lib/RedisTopo.pm: a CA
# and certificates made with openssl, every server on loopback without a
# plaintext port, so whatever works went over TLS).  Gateway nodes are a
# master and two workers each.
#
#   - verified TLS (ssl_trusted_certificate= the CA, 127.0.0.1 checked
#     against the certificate's IP SAN) with password=: a new key accepted
#     on node 1, replayed by node 2 through Redis, one job at the backend,
#     the key's entry in that Redis (redis-cli --tls);
#   - a CA that did not sign the server's certificate: keyed requests 503
#     UNAVAILABLE with Retry-After, an [error] naming the server's address
#     and the reason (at most once a minute per worker, the workers' own
#     retries included), no [crit] line, a request without a key still
#     202; the configuration fixed (reload): 202, and the entry replayed by
#     another node (the failures below are checked the same way);
#   - a certificate for another name (ssl_name defaults to the address's
#     host, 127.0.0.1): 503 and an [error] that says the name does not
#     match; ssl_name= the certificate's DNS name with ssl_server_name=on:
#     202;
#   - an expired certificate: 503 and an [error] ... expired;
#   - ssl_verify=off: a server whose certificate no trusted CA signed is
#     served (202);
#   - mutual TLS (tls-auth-clients yes): without ssl_certificate 503 and an
#     [error] naming the server; with ssl_certificate= and
#     ssl_certificate_key= of a client certificate of the CA 202, replayed
#     by another node, the entry in that Redis;
#   - on_error=local with a certificate that fails verification: the local
#     fallback (202, counted in redisFallbacks);
#   - the connections killed by Redis three times (CLIENT KILL TYPE
#     normal): keyed requests accepted again within a bound and replayed
#     across nodes; the reconnects resume the TLS session (nginx's debug
#     log of the handshake: "SSL reused session"), and a node with
#     ssl_session_reuse=off makes full handshakes only (when the nginx under
#     test logs at debug);
#   - nginx -t refuses ssl=on with ssl_verify on (the default, or said) and
#     no ssl_trusted_certificate, ssl_certificate without
#     ssl_certificate_key and the reverse, ssl_* parameters without ssl=on
#     (or with ssl=off), bad values of ssl, ssl_verify, ssl_server_name,
#     ssl_session_reuse, ssl_protocols, ssl_verify_depth and ssl_ciphers,
#     and a certificate, key or CA file that is not there, each with an
#     [emerg] naming the parameter; it accepts the good uses without
#     connecting to Redis;
#   - no password and no private key in any log of the nodes.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use File::Find ();
use InfTest qw(:all);
use RedisTopo qw(:all);

my $missing = RedisTopo::tools_missing();
plan skip_all => $missing if $missing;
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $T0 = Time::HiRes::time();
my $PW = "Tls-pw-$$-secret";
my $NAME = 'redis.fleet.test';          # the DNS name of one certificate
my $KEY_RE = qr/^influencers:[0-9a-f]{16}:[0-9a-f]{64}$/;
my $WORKERS = 2;

sub elapsed { return sprintf '%.1f s', Time::HiRes::time() - $_[0]; }

# ------------------------------------------------ TLS material, servers

# the TLS material and the Redis servers live in a test dir of their own
my $pki = InfTest->new;
my $ca      = make_ca($pki, 'ca');
my $other   = make_ca($pki, 'other');
my $server  = make_cert($pki, 'server', ca => $ca);      # localhost, IP:127.0.0.1
my $foreign = make_cert($pki, 'foreign', ca => $other);
my $named   = make_cert($pki, 'named', ca => $ca, cn => $NAME, san => ["DNS:$NAME"]);
my $expired = make_cert($pki, 'expired', ca => $ca, expired => 1);
my $client  = make_cert($pki, 'client', ca => $ca, client => 1,
                        cn => 'fleet-gateway', san => []);

sub tls_of {
    my ($c) = @_;
    return (cert => $c->{cert}, key => $c->{key}, ca => $ca->{cert});
}

my $good  = start_redis_tls($pki, name => 'good', tls_of($server), password => $PW);
my $alien = start_redis_tls($pki, name => 'alien', tls_of($foreign));
my $misnamed = start_redis_tls($pki, name => 'misnamed', tls_of($named));
my $stale = start_redis_tls($pki, name => 'stale', tls_of($expired));
my $mtls  = start_redis_tls($pki, name => 'mtls', tls_of($server),
                            client_auth => 1, password => $PW);
note 'TLS material and five Redis servers over TLS in ' . elapsed($T0);

sub at { my ($srv) = @_; return '127.0.0.1:' . $srv->port; }

my $TLS    = "ssl=on ssl_trusted_certificate=$ca->{cert}";
my $CLIENT = "ssl_certificate=$client->{cert} ssl_certificate_key=$client->{key}";
my $GOOD   = at($good) . " password=$PW $TLS timeout=1s";

# ------------------------------------------------ gateway nodes

# nginx's debug log tells whether a handshake resumed a session: the nodes
# that show it log at debug (unless INFLUENCERS_LOG_LEVEL says otherwise)
my $DEBUG = (InfTest::nginx_configure() // '') =~ /--with-debug\b/
            && (!$ENV{INFLUENCERS_LOG_LEVEL} || $ENV{INFLUENCERS_LOG_LEVEL} eq 'debug');

my ($n1, $n2) = InfTest->fleet(
    log_level => 'debug',
    zone      => 'zone=jobs:1m lease=2s',
    address   => at($good),
    redis     => "password=$PW $TLS timeout=1s",
);
my @NODES = ($n1, $n2);
my %NAME_OF = ($n1 => 'node 1', $n2 => 'node 2');

sub node_conf {
    my ($n, $args) = @_;
    return $n->default_conf(server => STATS_LOCATION, zone => 'zone=jobs:1m lease=2s',
                            redis => "zone=jobs $args");
}

# another gateway node on the same backend, with these influencers_redis
# arguments after zone=jobs
sub node {
    my ($args, %o) = @_;
    my $n = $n1->peer(log_level => $o{log_level} // 'info');
    $n->write_directory;
    $n->conf(node_conf($n, $args));
    $n->run;
    push @NODES, $n;
    return $n;
}

my $seq = 0;
sub fresh { return sprintf('fleet-tls-%s-%d-%d', $_[0], $$, ++$seq); }

sub body_of { return qq({"prompt":"$_[0]"}); }

# the jobs the backend received for a key (its prompt)
sub jobs_for {
    my ($key) = @_;
    my $jobs = $n1->backend_jobs;
    return sort grep {
        my $b = InfTest::json_decode($jobs->{$_}[0]{body} || '{}') || {};
        (ref $b->{params} eq 'HASH' ? $b->{params}{prompt} // '' : '') eq $key;
    } keys %$jobs;
}

# the keys of fleet mode in a Redis over TLS, through redis-cli --tls
sub tls_keys {
    my ($srv, @opt) = @_;
    my $r = $srv->cli(@opt, 'KEYS', 'influencers:*');
    return grep { length } split /\n/, $r->{out};
}

# the error.log lines matching $re, waited for (bounded): a line may come
# a moment after the answer
sub wait_log {
    my ($n, $re, $within) = @_;
    my $end = Time::HiRes::time() + ($within // 3);
    while (1) {
        my @l = $n->log_lines($re);
        return @l if @l || Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.1);
    }
}

sub redis_lines {
    my ($n) = @_;
    my @l = grep { /\[(?:error|warn|crit|alert|emerg)\]/ } split /\n/, $n->error_log;
    splice @l, 0, @l - 15 if @l > 15;
    return join "\n", @l;
}

# a node whose Redis fails: keyed requests answered 503 UNAVAILABLE with
# Retry-After, at once; one without a key served; an [error] naming the
# server's address, its reason matching $why, at most once a minute per
# worker however many requests failed and however often the workers tried
# again meanwhile (its backoff: 50 ms doubled up to 1 s, so about five
# connects in the 1.6 s waited), and no line above [error] for it
sub unavailable {
    my ($n, $name, $srv, $why) = @_;
    my $addr = at($srv);
    my $t0 = Time::HiRes::time();
    for my $i (1 .. 4) {
        my $t0 = Time::HiRes::time();
        my $r = $n->idem(fresh('refused'), body => '{"prompt":"refused"}');
        my $sec = Time::HiRes::time() - $t0;
        if ($i == 1) {
            check_error($r, 503, 'UNAVAILABLE', undef,
                        "$name: a keyed request: 503 UNAVAILABLE");
            like($r->header('retry-after') // '', qr/^[1-9]\d*$/,
                 "$name: ... with Retry-After");
            cmp_ok($sec, '<', 2, sprintf("$name: ... answered within 2 s (%.3f s)", $sec));
        } else {
            is($r->status, 503, "$name: keyed request $i: 503") or diag($r->summary);
        }
    }
    is($n->create(body => '{}')->status, 202, "$name: a request without a key: 202");
    my @l = wait_log($n, qr/\[error\].*\Q$addr\E\b/);
    sleep_until($t0 + 1.6);
    @l = $n->log_lines(qr/\[error\].*\Q$addr\E\b/);
    my @why = grep { /$why/ } @l;
    ok(scalar @why, "$name: an [error] naming $addr and the reason ($why)")
        or diag("error.log:\n" . redis_lines($n));
    note("$name: " . ($why[0] // $l[0] // '(no line)'));
    cmp_ok(scalar @why, '<=', $WORKERS,
           "$name: ... logged at most once per worker (four requests, the retries)")
        or diag(join "\n", @why);
    my @loud = $n->log_lines(qr/\[(?:crit|alert|emerg)\]/);
    is(scalar @loud, 0, "$name: no [crit] (or worse) line: those would come at "
                        . 'every connect, not once a minute')
        or diag(join "\n", @loud[0 .. ($#loud < 4 ? $#loud : 4)]);
    return $why[0];
}

# polls (bounded) with new keys until $n accepts one: (the 202, how many
# 503s came before it); undef when none was accepted in time
sub accepted_soon {
    my ($n, $what, $within) = @_;
    my $end = Time::HiRes::time() + ($within // 3);
    my $waited = 0;
    while (1) {
        my $key = fresh($what);
        my $r = $n->idem($key, body => body_of($key));
        return ($r, $waited, $key) if $r->status == 202;
        if ($r->status != 503) {
            diag("$what: neither 202 nor 503:\n" . $r->summary);
            return (undef, $waited, $key);
        }
        $waited++;
        return (undef, $waited, $key) if Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.05);
    }
}

# polls (bounded) the same key on $n until it is not answered 503
sub answered_soon {
    my ($n, $key, $within) = @_;
    my $end = Time::HiRes::time() + ($within // 3);
    while (1) {
        my $r = $n->idem($key, body => body_of($key));
        return $r if $r->status != 503 || Time::HiRes::time() >= $end;
        Time::HiRes::sleep(0.05);
    }
}

# ================================================ verified TLS

{
    my $key = fresh('verified');
    my $r1 = $n1->idem($key, body => body_of($key));
    my $j = check_new_job($r1, 'verified TLS: node 1 accepts a new key: 202');
    diag("node 1 error.log:\n" . redis_lines($n1)) unless $r1->status == 202;
    check_replay($n2->idem($key, body => body_of($key)), $r1,
                 'verified TLS: node 2 replays it (through Redis, over TLS)');
    is(join(',', jobs_for($key)), $j->{jobId} // '?',
       'verified TLS: the backend got one job for the key');
    my @k = tls_keys($good);
    cmp_ok(scalar @k, '>=', 1, 'verified TLS: the entry is in the Redis over TLS')
        or diag(explain $good->cli('KEYS', '*'));
    is(scalar(grep { !/$KEY_RE/ } @k), 0,
       '... named <prefix>:<16 hex org hash>:<64 hex key digest>')
        or diag(join "\n", @k);
    my $clients = $good->cli('CLIENT', 'LIST')->{out};
    cmp_ok(scalar(my @c = grep { /\bcmd=/ && !/\bcmd=client\|list\b/ } split /\n/, $clients),
           '>=', 2, 'verified TLS: both nodes hold a connection to it (its TLS port)')
        or diag($clients);
}

# ================================================ another CA, then fixed

{
    my $wca = node(at($good) . " password=$PW ssl=on ssl_trusted_certificate=$other->{cert}");
    unavailable($wca, 'another CA', $good, qr/certificate/);

    ok($wca->reload(conf => node_conf($wca, $GOOD)),
       'another CA: the configuration fixed (the right CA), nginx -s reload');
    my $key = fresh('fixed');
    my $r = $wca->idem($key, body => body_of($key));
    check_new_job($r, 'another CA, fixed: a new key: 202');
    diag("error.log:\n" . redis_lines($wca)) unless $r->status == 202;
    check_replay($n1->idem($key, body => body_of($key)), $r,
                 'another CA, fixed: node 1 replays it: the same Redis');
}

# ================================================ another name

{
    my $nm = node(at($misnamed) . " $TLS");
    unavailable($nm, 'a certificate for another name', $misnamed,
                qr/does not match|certificate/);
    like(($nm->log_lines(qr/\[error\].*\Q${\ at($misnamed) }\E/))[0] // '',
         qr/127\.0\.0\.1(?!:)|does not match/,
         'another name: the line says which name was checked, or that it did not match');

    ok($nm->reload(conf => node_conf($nm, at($misnamed)
                   . " $TLS ssl_name=$NAME ssl_server_name=on")),
       "ssl_name=$NAME ssl_server_name=on: nginx -s reload");
    my $key = fresh('named');
    my $r = $nm->idem($key, body => body_of($key));
    check_new_job($r, "ssl_name=$NAME, the certificate's name: a new key: 202");
    diag("error.log:\n" . redis_lines($nm)) unless $r->status == 202;
    check_replay($nm->idem($key, body => body_of($key)), $r, '... and its replay');
    cmp_ok(scalar(my @k = tls_keys($misnamed)), '>=', 1, '... its entry in that Redis');
}

# ================================================ expired

{
    my $ex = node(at($stale) . " $TLS");
    unavailable($ex, 'an expired certificate', $stale, qr/expired/);
}

# ================================================ ssl_verify=off

{
    my $off = node(at($alien) . ' ssl=on ssl_verify=off');
    my $key = fresh('noverify');
    my $r = $off->idem($key, body => body_of($key));
    check_new_job($r, 'ssl_verify=off: a server of another CA is served: 202');
    diag("error.log:\n" . redis_lines($off)) unless $r->status == 202;
    check_replay($off->idem($key, body => body_of($key)), $r, '... and its replay');
    cmp_ok(scalar(my @k = tls_keys($alien, { ca => $other->{cert} })), '>=', 1,
           '... its entry in that Redis');
}

# ================================================ mutual TLS

{
    my $none = node(at($mtls) . " password=$PW $TLS");
    unavailable($none, 'mutual TLS without ssl_certificate', $mtls, qr/./);

    my $ma = node(at($mtls) . " password=$PW $TLS $CLIENT");
    my $mb = node(at($mtls) . " password=$PW $TLS $CLIENT");
    my $key = fresh('mtls');
    my $r = $ma->idem($key, body => body_of($key));
    my $j = check_new_job($r, 'mutual TLS with a client certificate of the CA: a new key: 202');
    diag("error.log:\n" . redis_lines($ma)) unless $r->status == 202;
    check_replay($mb->idem($key, body => body_of($key)), $r,
                 'mutual TLS: another node with the certificate replays it');
    is(join(',', jobs_for($key)), $j->{jobId} // '?', 'mutual TLS: one job for the key');
    cmp_ok(scalar(my @k = tls_keys($mtls, { cert => $client->{cert}, key => $client->{key} })),
           '>=', 1, 'mutual TLS: the entry is in that Redis');
}

# ================================================ on_error=local

{
    my $local = node(at($alien) . " $TLS on_error=local");
    my $fb0 = $local->stats->{redisFallbacks} // 0;
    my $key = fresh('local');
    my $r = $local->idem($key, body => body_of($key));
    check_new_job($r, 'on_error=local, a certificate that fails verification: 202 (local zone)');
    diag("error.log:\n" . redis_lines($local)) unless $r->status == 202;
    check_replay($local->idem($key, body => body_of($key)), $r, '... replayed by the node');
    cmp_ok(($local->stats->{redisFallbacks} // 0) - $fb0, '>=', 1,
           '... counted in redisFallbacks');
    is(scalar(my @k = tls_keys($alien, { ca => $other->{cert} })), 1,
       '... and nothing written to that Redis (only the ssl_verify=off entry)');
}

# ================================================ reconnects, sessions

{
    my $noreuse = node("$GOOD ssl_session_reuse=off", log_level => 'debug');
    my $reuse = node($GOOD, log_level => 'debug');
    my @watched = ($n1, $n2, $reuse, $noreuse);
    $NAME_OF{$reuse} = 'a node of the default ssl_session_reuse';
    $NAME_OF{$noreuse} = 'the ssl_session_reuse=off node';
    my $SESSION_RE = qr/\bSSL reused session\b/;
    my $HANDSHAKE_RE = qr/\bSSL: TLSv1\.[23], cipher: /;
    my %reused0 = map { $_ => $_->count_log($SESSION_RE) } @watched;
    my %hs0 = map { $_ => $_->count_log($HANDSHAKE_RE) } @watched;

    # every node connected (both workers, as far as the requests spread)
    for my $n ($reuse, $noreuse) {
        my ($r) = accepted_soon($n, 'warm', 3);
        ok($r, "$NAME_OF{$n}: connected: a new key accepted");
    }
    my ($killed, $waited, $worst) = (0, 0, 0);
    for my $round (1 .. 3) {
        my $k = $good->cli('CLIENT', 'KILL', 'TYPE', 'normal');
        like($k->{out}, qr/^\d+$/, "round $round: CLIENT KILL TYPE normal") or diag(explain $k);
        $killed += $k->{out} =~ /^(\d+)$/ ? $1 : 0;
        my $t0 = Time::HiRes::time();
        for my $n (@watched) {
            # a few keys each, so that both workers of the node reconnect
            for my $i (1 .. 3) {
                my ($r, $w, $key) = accepted_soon($n, "round$round", 3);
                $waited += $w;
                if (!$r) {
                    fail("round $round: $NAME_OF{$n} accepts a new key again within 3 s");
                    diag("error.log:\n" . redis_lines($n));
                    next;
                }
                next unless $i == 1;
                my $other_node = $n == $n1 ? $n2 : $n1;
                check_replay(answered_soon($other_node, $key, 3), $r,
                             "round $round: a key of $NAME_OF{$n} replayed by "
                             . "$NAME_OF{$other_node} after the reconnect");
            }
        }
        my $sec = Time::HiRes::time() - $t0;
        $worst = $sec if $sec > $worst;
    }
    # each round kills one connection at least of each of the four nodes
    cmp_ok($killed, '>=', 3 * 4,
           "Redis killed the nodes' connections ($killed in three rounds)");
    note(sprintf('%d answers 503 while the nodes reconnected; the slowest round took %.2f s',
                 $waited, $worst));

    SKIP: {
        skip 'the TLS session seen only in nginx\'s debug log (no --with-debug, or '
             . 'INFLUENCERS_LOG_LEVEL)', 4 unless $DEBUG;
        my %reused = map { $_ => $_->count_log($SESSION_RE) - $reused0{$_} } @watched;
        my %hs = map { $_ => $_->count_log($HANDSHAKE_RE) - $hs0{$_} } @watched;
        note(join ', ', map { "$NAME_OF{$_}: $hs{$_} handshakes, $reused{$_} resumed" } @watched);
        cmp_ok($hs{$reuse} + $hs{$n1} + $hs{$n2}, '>=', 3,
               'the reconnects made new TLS handshakes (debug log: "SSL: TLSv1.x, cipher")');
        cmp_ok($reused{$reuse} + $reused{$n1} + $reused{$n2}, '>=', 3,
               'ssl_session_reuse (default on): reconnects resumed the TLS session '
               . '(debug log: "SSL reused session")')
            or diag(join "\n", ($reuse->log_lines(qr/SSL|session/i))[0 .. 20]);
        cmp_ok($hs{$noreuse}, '>=', 3, 'ssl_session_reuse=off: new handshakes too');
        is($reused{$noreuse}, 0,
           'ssl_session_reuse=off: none of them resumed a session')
            or diag(join "\n", $noreuse->log_lines($SESSION_RE));
    }
}

# ================================================ nginx -t

my $cfg = InfTest->new(log_level => 'info');
$cfg->write_directory;

# nginx -t of default_conf(redis => ..): (rc, the [emerg] line or the output)
sub try_conf {
    my ($args) = @_;
    $cfg->conf($cfg->default_conf(redis => "zone=jobs $args"));
    my ($rc, $out) = $cfg->test_config;
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    return ($rc, $emerg // $out);
}

# a refused configuration: rc != 0, an [emerg] that says what is wrong
# (names the parameter; o{also}: and the bad value or file), and the file
# and line, unless no_line (what OpenSSL loads may be checked where nginx
# knows no line: the parameter's name then says which one)
sub refused {
    my ($name, $what, $args, %o) = @_;
    my ($rc, $msg) = try_conf($args);
    subtest "nginx -t refuses $name" => sub {
        isnt($rc, 0, 'nginx -t fails');
        like($msg, qr/\[emerg\]/, 'with an [emerg]');
        like($msg, $what, 'that says what is wrong') or diag($msg);
        like($msg, $o{also}, 'and names ' . $o{also}) or diag($msg) if $o{also};
        like($msg, qr{ in \S+nginx\.conf:\d+}, 'naming the file and line')
            unless $o{no_line};
    };
    note("$name: $msg");
}

{
    my $A = at($good);
    my $nocert = $pki->dir . '/no-such-dir/ca.crt';
    my @good = (
        "$A $TLS",
        "$A ssl=on ssl_verify=off",
        "$A ssl=off",
        "$A ssl=on ssl_verify=off ssl_protocols=TLSv1.3",
        "$A password=x ssl=on ssl_verify=on ssl_verify_depth=2 "
            . "ssl_trusted_certificate=$ca->{cert} ssl_server_name=on ssl_name=$NAME "
            . "$CLIENT ssl_protocols=TLSv1.2:TLSv1.3 ssl_ciphers=HIGH:!aNULL:!MD5 "
            . 'ssl_session_reuse=off',
    );
    my $conn0 = conns_of($good);
    for my $args (@good) {
        my ($rc, $msg) = try_conf($args);
        is($rc, 0, "nginx -t accepts influencers_redis zone=jobs $args") or diag($msg);
    }
    is(conns_of($good) - $conn0, 1,
       '... and made no connection to the Redis it names (only redis-cli\'s)');

    refused('ssl=on without ssl_trusted_certificate (ssl_verify on by default)',
            qr/ssl_trusted_certificate/, "$A ssl=on");
    refused('ssl_verify=on without ssl_trusted_certificate',
            qr/ssl_trusted_certificate/, "$A ssl=on ssl_verify=on");
    refused('ssl_certificate without ssl_certificate_key',
            qr/ssl_certificate_key/, "$A $TLS ssl_certificate=$client->{cert}");
    refused('ssl_certificate_key without ssl_certificate',
            qr/ssl_certificate(?!_key)/, "$A $TLS ssl_certificate_key=$client->{key}");
    refused('ssl_trusted_certificate without ssl=on',
            qr/ssl_trusted_certificate|ssl=on/, "$A ssl_trusted_certificate=$ca->{cert}");
    refused('ssl_verify=off without ssl=on',
            qr/ssl_verify|ssl=on/, "$A ssl_verify=off");
    refused('ssl_name with ssl=off',
            qr/ssl_name|ssl=on|ssl=off/, "$A ssl=off ssl_name=$NAME");
    refused('ssl_certificate and ssl_certificate_key without ssl=on',
            qr/ssl_certificate|ssl=on/, "$A $CLIENT");
    refused('ssl=yes', qr/\bssl\b|ssl=yes/, "$A ssl=yes");
    refused('ssl_verify=maybe', qr/ssl_verify/, "$A ssl=on ssl_verify=maybe");
    refused('ssl_server_name=yes', qr/ssl_server_name/, "$A $TLS ssl_server_name=yes");
    refused('ssl_session_reuse=1', qr/ssl_session_reuse/, "$A $TLS ssl_session_reuse=1");
    refused('ssl_protocols=TLSv9', qr/ssl_protocols|TLSv9/, "$A $TLS ssl_protocols=TLSv9");
    refused('an empty ssl_protocols', qr/ssl_protocols/, "$A $TLS ssl_protocols=");
    refused('ssl_protocols with a bad one among good ones', qr/ssl_protocols|TLSv1\.9/,
            "$A $TLS ssl_protocols=TLSv1.2:TLSv1.9");
    refused('ssl_verify_depth=abc', qr/ssl_verify_depth/, "$A $TLS ssl_verify_depth=abc");
    refused('ssl_verify_depth=-1', qr/ssl_verify_depth/, "$A $TLS ssl_verify_depth=-1");
    refused('ssl_ciphers that OpenSSL does not know', qr/ssl_ciphers/,
            "$A $TLS ssl_ciphers=NO-SUCH-CIPHER", no_line => 1, also => qr/NO-SUCH-CIPHER/);
    refused('ssl_trusted_certificate of a file that is not there',
            qr/ssl_trusted_certificate/, "$A ssl=on ssl_trusted_certificate=$nocert",
            no_line => 1, also => qr/\Q$nocert\E/);
    refused('ssl_certificate of a file that is not there', qr/ssl_certificate(?!_key)/,
            "$A $TLS ssl_certificate=$nocert ssl_certificate_key=$client->{key}",
            no_line => 1, also => qr/\Q$nocert\E/);
    refused('ssl_certificate_key of a file that is not there', qr/ssl_certificate_key/,
            "$A $TLS ssl_certificate=$client->{cert} ssl_certificate_key=$nocert",
            no_line => 1, also => qr/\Q$nocert\E/);
    refused('ssl given twice', qr/\bssl\b|duplicate|twice/, "$A $TLS ssl=on");
}

# connections a Redis over TLS received (INFO through redis-cli: counts its own)
sub conns_of {
    my ($srv) = @_;
    my ($n) = $srv->cli('INFO', 'stats')->{out} =~ /^total_connections_received:(\d+)/m;
    return $n // -1;
}

# ================================================ no secret in the logs

{
    $_->stop for @NODES;
    # the base64 lines of every private key, and the password
    my @secrets = ($PW);
    for my $f ($client->{key}, $server->{key}, $ca->{key}, $other->{key}) {
        my $pem = $pki->read_file($f) // '';
        push @secrets, grep { length >= 40 } $pem =~ /^([A-Za-z0-9+\/=]+)$/mg;
    }
    cmp_ok(scalar @secrets, '>=', 4, 'the password and the private keys\' lines to look for');
    my (@files, @leaks);
    my $bytes = 0;
    for my $n (@NODES, $cfg) {
        File::Find::find({ no_chdir => 1, wanted => sub {
            push @files, $_ if -f $_ && $_ !~ m{/(?:nginx\.conf|directory\.json)$}
                               && $_ !~ m{/redis-data/};
        } }, $n->dir);
    }
    for my $f (@files) {
        my $c = $n1->read_file($f) // '';
        $bytes += length $c;
        push @leaks, "$f: PRIVATE KEY" if $c =~ /PRIVATE KEY/;
        for my $s (@secrets) {
            push @leaks, "$f: " . substr($s, 0, 12) . '...' if index($c, $s) >= 0;
        }
    }
    cmp_ok($bytes, '>', 0, 'logs to look at (' . scalar(@files) . ' files, two nodes at debug)');
    is(scalar @leaks, 0, 'no password and no private key in any log of the nodes')
        or diag(join "\n", @leaks);
}

$_->check_log_clean for @NODES;

note('t/49 took ' . elapsed($T0));

done_testing;
