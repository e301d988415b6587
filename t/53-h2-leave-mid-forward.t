#!/usr/bin/perl

# ISSUE 14, case 1: a partner that leaves over HTTP/2 while its job is at
# the backend.  The stream is reset (RST_STREAM CANCEL), the connection
# closed, or GOAWAY sent then the connection closed, over cleartext HTTP/2
# and over TLS.  With proxy_ignore_client_abort on (as the README asks)
# the forward runs to its end and its outcome reaches the store however
# the request ended: a 2xx makes the retry a replay of that job, a failure
# the backend answered releases the key.  Without it, the forward is cut
# after the job was sent: the outcome is unknown, the key keeps its job,
# and the retry sends the same job again at once (no 409: nothing runs).
# The same on a fleet of two nodes, the retry landing on the other node.
# Every answer any partner got shows one job per key; every forward of a
# key carries that job.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use InfTest qw(:all);
use H2;

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $OPENSSL = `sh -c 'command -v openssl' 2>/dev/null`;
chomp $OPENSSL;
plan skip_all => 'no openssl command (apt-get install openssl): the TLS '
               . 'certificate and client need it' unless $OPENSSL;

my $DELAY = 1.0;    # the backend's answer time: the partner leaves first
my $PATH  = '/v1/projects/' . P_FEMALE . '/influencers';

# the HTTP/2 listeners of a node: cleartext (prior knowledge) and TLS
sub h2_listeners {
    my ($t) = @_;
    my $dir = $t->dir;
    unless (-s "$dir/cert.pem") {
        system("'$OPENSSL' req -x509 -newkey ec -pkeyopt "
               . "ec_paramgen_curve:prime256v1 -nodes -days 1 "
               . "-subj /CN=localhost -keyout '$dir/key.pem' "
               . "-out '$dir/cert.pem' >'$dir/openssl-req.log' 2>&1") == 0
            or BAIL_OUT('openssl req failed');
    }
    return "listen 127.0.0.1:%%PORT_H2C%% http2;\n"
         . "        listen 127.0.0.1:%%PORT_H2TLS%% ssl http2;\n"
         . "        ssl_certificate %%TESTDIR%%/cert.pem;\n"
         . "        ssl_certificate_key %%TESTDIR%%/key.pem;\n"
         . '        ' . STATS_LOCATION . "\n";
}

# a second server whose backend location cuts the forward when the partner
# leaves (no proxy_ignore_client_abort)
sub cutting_server {
    return endpoint_server(port => 'CUT', listen => ' http2', error_page => '',
        top => "listen 127.0.0.1:%%PORT_CUT1%%;\n        server_name localhost;",
        render => '/_render_cut', render_extra => 'proxy_read_timeout 5s;');
}

# the request on stream 1 of a new connection, left in one of the ways
# once the backend has the job; returns the job id forwarded
sub leave_mid_forward {
    my ($t, %o) = @_;
    my $n0 = $t->forwards;
    my $c = H2->connect(port => $o{port}, tls => $o{tls}, dir => $t->dir);
    $c->request(1, path => $PATH, body => $o{body}, headers => [
        authorization => 'Bearer ' . K_WRITE,
        'content-type' => 'application/json',
        'idempotency-key' => $o{key} ]);
    my @fw = $t->wait_backend_requests($n0 + 1, timeout => 5);
    my $job = @fw > $n0 ? $fw[-1]{h}{'idempotency-key'}[0] : undef;

    if ($o{how} eq 'rst') {
        $c->rst(1);
        $c->response(1, 0.2);
    } elsif ($o{how} eq 'goaway') {
        $c->goaway;
        Time::HiRes::sleep(0.05);
    }
    $c->close;
    return $job;
}

# ================================================================ one node

my $t = InfTest->new(log_level => 'info');
$t->write_directory;
$t->conf($t->default_conf(server => h2_listeners($t), http => cutting_server(),
                          read_timeout => '5s'));
$t->start_backend(control => { delay => $DELAY });
$t->run;

my $k = 0;
for my $tls (0, 1) {
    for my $how (qw(rst close goaway)) {
        my $what = ($tls ? 'TLS' : 'h2c') . ", $how";
        my $key = 'h2-leave-' . ++$k;
        my $body = qq({"prompt":"left $k"});

        # accepted by the backend after the partner left: a replay
        $t->set_backend(delay => $DELAY);
        my $job = leave_mid_forward($t, port => $t->port($tls ? 'h2tls' : 'h2c'),
                                    tls => $tls, how => $how, key => $key,
                                    body => $body);
        ok($job, "$what: the job reached the backend before the partner left");
        my $n1 = $t->forwards;
        Time::HiRes::sleep($DELAY + 0.4);
        $t->set_backend;
        my $r = $t->idem($key, body => $body);
        my $j = check_resent($r, $job, "$what, the forward accepted: the retry replays the job");
        is($t->forwards, $n1, "$what: the retry is not forwarded");
        is($j->{jobId}, $job, "$what: the job the backend accepted");

        # failed at the backend after the partner left: the key is free
        $key .= '-failed';
        $t->set_backend(delay => $DELAY, status => 500);
        my $failed = leave_mid_forward($t, port => $t->port($tls ? 'h2tls' : 'h2c'),
                                       tls => $tls, how => $how, key => $key,
                                       body => $body);
        Time::HiRes::sleep($DELAY + 0.4);
        $t->set_backend;
        my $n2 = $t->forwards;
        my $again = $t->idem($key, body => $body);
        my $ja = check_new_job($again, "$what, the backend answered 500: the retry is a new job");
        isnt($ja->{jobId}, $failed, "$what: with a new jobId");
        is($t->forwards, $n2 + 1, "$what: forwarded");
    }
}

# the forward cut with the partner's stream: the job may be at the backend
{
    $t->set_backend(delay => $DELAY);
    my $key = 'h2-cut-1';
    my $body = '{"prompt":"cut"}';
    my $job = leave_mid_forward($t, port => $t->port('cut'), tls => 0,
                                how => 'rst', key => $key, body => $body);
    ok($job, 'no proxy_ignore_client_abort: the job reached the backend');
    Time::HiRes::sleep(0.3);
    my $n1 = $t->forwards;
    $t->set_backend;
    my $t0 = Time::HiRes::time();
    my $r = $t->create(body => $body, port => $t->port('cut1'),
                       headers => ['Idempotency-Key' => $key]);
    check_resent($r, $job, 'the forward was cut: the retry sends the same job again at once');
    cmp_ok(Time::HiRes::time() - $t0, '<', $DELAY,
           '... without waiting for a lease: no forward runs');
    is($t->forwards, $n1 + 1, '... forwarded again');
    $t->check_job_forwards($job, '... byte for byte the first forward', count => 2);
}

{
    my $s = $t->stats;
    is($s->{inflight}, 0, 'stats: nothing in flight');
    is($s->{keyed}, 13, 'stats: an entry for each key accepted');
    cmp_ok($s->{unknownOutcomes}, '>=', 1, 'stats: the cut forward counted as unknown');
}
like($t->error_log, qr/\[info\].*the partner left before the answer, the forward's outcome \(accepted\) goes to the store/,
     'error.log: [info] the partner left, the outcome went to the store');

$t->check_log_clean;
$t->cleanup;

# ================================================================ a fleet

SKIP: {
    skip InfTest::redis_missing(), 12 if InfTest::redis_missing();

    my ($n1, $n2) = InfTest->fleet(log_level => 'info', zone => 'zone=jobs:1m lease=10s',
                                   read_timeout => '5s', control => { delay => $DELAY },
                                   server => "listen 127.0.0.1:%%PORT_H2C%% http2;\n"
                                             . '        ' . STATS_LOCATION);

    my $i = 0;
    for my $how (qw(rst close goaway)) {
        my $key = 'h2-fleet-' . ++$i;
        my $body = qq({"prompt":"fleet left $i"});
        $n1->set_backend(delay => $DELAY);
        my $job = leave_mid_forward($n1, port => $n1->port('h2c'), tls => 0,
                                    how => $how, key => $key, body => $body);
        ok($job, "fleet, $how: the job reached the backend before the partner left");
        Time::HiRes::sleep($DELAY + 0.4);
        $n1->set_backend;
        my $f = $n1->forwards;
        my $r = $n2->idem($key, body => $body);
        check_resent($r, $job, "fleet, $how: the retry on node 2 replays node 1's job");
        is($n1->forwards, $f, "fleet, $how: not forwarded again");
        check_resent($n1->idem($key, body => $body), $job,
                     "fleet, $how: node 1 replays it too");
    }
    $_->check_log_clean for $n1, $n2;
}

done_testing;
