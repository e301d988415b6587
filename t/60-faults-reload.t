#!/usr/bin/perl

# Faults under load (issue 8, part 3): `nginx -s reload` five times while
# clients send new keys, side by side with a plain proxy_pass location to
# the same backend under the same load and the same reloads.
#
# Each client (forked, on loopback) keeps one keep-alive connection and
# sends a new Idempotency-Key per request, the key also being the body's
# prompt, so that the backend stand-in's records tell the jobs apart.  A
# reload makes the old workers close their idle keep-alive connections: a
# request sent on one just then meets a closed connection, the same for
# the module and for proxy_pass.  (A client looks for the server's FIN
# before it reuses a connection, as client libraries do: a connection
# closed while idle is counted apart, "closed idle", not as broken.)
#
# Asserted: no 5xx from the module; its broken connections no more than
# proxy_pass's plus a small slack; every 202 forwarded exactly once, no
# key forwarded twice; a key whose connection broke is free (a retry is a
# 202, still one forward in all); and the zone has nothing in flight
# afterwards.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use FaultLoad;

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $CLIENTS = 3;      # per location
my $SECONDS = 4.5;    # of load
my $RELOADS = 5;
my $SLACK   = 3;      # module broken connections allowed above proxy_pass's

my $t = FaultLoad::gateway(server => q{
        location /plain/ {
            proxy_pass http://render/plain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 500ms;
            proxy_read_timeout 1s;
        }});

is($t->http('POST', '/plain/x', ['Content-Type' => 'application/json'], '{}')
      ->status, 202, 'the proxy_pass location answers 202');
my $base = $t->stats;

# ---------------------------------------------------------------- the load

my $start = Time::HiRes::time() + 0.3;
my $m = FaultLoad->start($t, name => 'm', clients => $CLIENTS,
                         seconds => $SECONDS, start => $start);
my $p = FaultLoad->start($t, name => 'p', clients => $CLIENTS,
                         seconds => $SECONDS, start => $start,
                         path => '/plain/x');

# HUP, as `nginx -s reload` sends it; hup() waits for the new generation
# of workers only, the old one finishing its requests meanwhile
my $reloaded = 0;
for my $i (1 .. $RELOADS) {
    sleep_until($start + 0.5 + ($i - 1) * ($SECONDS - 1) / ($RELOADS - 1));
    $reloaded++ if $t->hup;
}
is($reloaded, $RELOADS, "$RELOADS reloads under load, each a new generation of workers");

my @m = $m->finish;
my @p = $p->finish;
is($m->lost + $p->lost, 0, 'every client ended by itself');
is(scalar($m->errors, $p->errors), 0, 'no client failed')
    or diag(join "\n", $m->errors, $p->errors);

my ($tm, $tp) = (FaultLoad::tally(@m), FaultLoad::tally(@p));
note('module:     ' . scalar(@m) . ' requests; ' . FaultLoad::tally_text($tm));
note('proxy_pass: ' . scalar(@p) . ' requests; ' . FaultLoad::tally_text($tp));
cmp_ok(scalar @m, '>=', 100, 'the module location had a load (' . scalar(@m) . ' requests)');
cmp_ok(scalar @p, '>=', 100, 'the proxy_pass location had a load (' . scalar(@p) . ' requests)');

my @m5xx = grep { $_->{status} >= 500 } @m;   # 503 CAPACITY included
is(scalar @m5xx, 0, 'no 5xx from the module') or diag(FaultLoad::sample(@m5xx));
my @mbad = grep { $_->{status} && $_->{status} != 202 } @m;
is(scalar @mbad, 0, 'every answer of the module is a 202') or diag(FaultLoad::sample(@mbad));
my @pbad = grep { $_->{status} && $_->{status} != 202 } @p;
is(scalar @pbad, 0, 'every answer of proxy_pass is the backend\'s 202')
    or diag(FaultLoad::sample(@pbad));

my @mbroken = grep { $_->{err} ne '-' } @m;
my @pbroken = grep { $_->{err} ne '-' } @p;
my @timeouts = grep { $_->{err} eq 'timeout' } @m, @p;
is(scalar @timeouts, 0, 'no request hung') or diag(FaultLoad::sample(@timeouts));
cmp_ok(scalar @mbroken, '<=', @pbroken + $SLACK,
       sprintf('broken connections: module %d, proxy_pass %d (slack %d)',
               scalar @mbroken, scalar @pbroken, $SLACK))
    or diag("module:\n" . FaultLoad::sample(@mbroken)
            . "\nproxy_pass:\n" . FaultLoad::sample(@pbroken));
my ($mstale, $pstale) = map { scalar grep { $_->{stale} } @$_ } \@m, \@p;
note(sprintf('RESULT reload: module %d requests, %d broken (%s), %d closed idle; '
             . 'proxy_pass %d requests, %d broken (%s), %d closed idle',
             scalar @m, scalar @mbroken, FaultLoad::tally_text(FaultLoad::tally(@mbroken)), $mstale,
             scalar @p, scalar @pbroken, FaultLoad::tally_text(FaultLoad::tally(@pbroken)), $pstale));

# ---------------------------------------------------------------- forwards

my @acc = grep { $_->{status} == 202 } @m;
my $fw = FaultLoad::check_forwarded_once($t, \@acc,
                                         what => '202 of the module', when => '');
my %sent = map { $_->{key} => 1 } @m;
my @stray = grep { /^m-/ && !$sent{$_} } keys %$fw;
is(scalar @stray, 0, 'every forward is of a key that was sent');

# a key whose connection broke was not accepted, or was: either way it is
# free or replays, and is forwarded once in all
my (%retry, @retry_bad);
for my $r (@mbroken) {
    my $a = $t->idem($r->{key}, body => qq({"prompt":"$r->{key}"}));
    $retry{ $a->status }++;
    push @retry_bad, "$r->{key}: " . $a->summary unless $a->status == 202;
}
is(scalar @retry_bad, 0, 'every key whose connection broke is a 202 when sent again ('
                         . scalar(@mbroken) . ')') or diag(join "\n", @retry_bad);
$fw = FaultLoad::forwards_by_marker($t);
my @bad_after = grep { ($fw->{ $_->{key} } // 0) != 1 } @mbroken;
is(scalar @bad_after, 0, '... each forwarded exactly once in all');

# some accepted keys again: replays, no new forward
my $n_fw = keys %$fw;
my @again = grep { $_->{status} == 202 } @m;
@again = @again[map { int($_ * @again / 10) } 0 .. 9] if @again > 10;
my $replays = grep {
    my $a = $t->idem($_->{key}, body => qq({"prompt":"$_->{key}"}));
    $a->status == 202 && ($a->header('idempotent-replayed') // '') eq 'true'
} @again;
is($replays, scalar @again, 'accepted keys sent again are replays');
is(scalar(keys %{ FaultLoad::forwards_by_marker($t) }), $n_fw, '... and forward nothing');

my $s = $t->stats;
is($s->{inflight}, 0, 'stats: nothing in flight');
is($s->{claims} - $base->{claims}, scalar(keys %$fw),
   'stats: one claim per key forwarded')
    or diag(json_encode($s));
is($s->{accepted} - $base->{accepted}, scalar(grep { /^m-/ } keys %$fw),
   'stats: accepted = the keys forwarded');
is(($s->{failed} // 0) - ($base->{failed} // 0), 0, 'stats: no forward failed');

# ---------------------------------------------------------------- the log

$t->stop;
my @lines = split /\n/, $t->error_log . ($t->read_file('stderr.log') // '');
my @bad = grep { /\[(?:alert|emerg|crit|error)\]|Sanitizer|==\d+==ERROR/ } @lines;
is(scalar @bad, 0, 'error.log: nothing at [error] or above')
    or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);

done_testing;
