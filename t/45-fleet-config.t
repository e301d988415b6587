#!/usr/bin/perl

# influencers_redis in the configuration: nginx -t refuses every bad use
# with an [emerg] that names the directive or the bad value and the file
# and line (a redis line without a declared zone, one before its zone, bad
# addresses, timeouts, db, on_error, an unknown parameter, a duplicate, the
# wrong context), and accepts the good ones, without connecting to Redis
# (the connection is made by the first keyed request).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->new(log_level => 'info');
$t->write_directory;
my $redis_up = !InfTest::redis_missing();
$t->start_redis if $redis_up;

# nginx -t of default_conf(%o): (rc, the [emerg] line or the output)
sub try_conf {
    my (%o) = @_;
    $t->conf($t->default_conf(%o));
    my ($rc, $out) = $t->test_config;
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    return ($rc, $emerg // $out);
}

# a refused configuration: rc != 0, an [emerg] naming $what, and the line
sub refused {
    my ($name, $what, %o) = @_;
    my ($rc, $msg) = try_conf(%o);
    subtest $name => sub {
        isnt($rc, 0, 'nginx -t fails');
        like($msg, qr/\[emerg\]/, 'with an [emerg]');
        like($msg, $what, 'that says what is wrong') or diag($msg);
        like($msg, qr{ in \S+nginx\.conf:\d+}, 'naming the file and line');
    };
    note("$name: $msg");
}

my $A = '127.0.0.1:%%REDIS_PORT%%';

# ------------------------------------------------ good ones

for my $args ("zone=jobs $A",
              "zone=jobs unix:/run/redis/redis.sock",
              "zone=jobs $A password=x user=gw db=15 prefix=prod-eu connect_timeout=1s timeout=150ms on_error=local",
              "zone=jobs $A on_error=503 timeout=1500ms db=0") {
    my $c0 = $redis_up ? $t->redis_info('stats')->{total_connections_received} : 0;
    my ($rc, $msg) = try_conf(redis => $args);
    is($rc, 0, "accepted: influencers_redis $args") or diag($msg);
    if ($redis_up) {
        is($t->redis_info('stats')->{total_connections_received} - $c0, 0,
           '... and nginx -t made no connection to Redis');
    }
}

# ------------------------------------------------ bad ones

refused('a zone that is not declared', qr/nope/,
        redis => "zone=nope $A");
refused('influencers_redis before the influencers_zone it names', qr/jobs|influencers_zone|influencers_redis/,
        http => "influencers_redis zone=jobs $A;");
refused('no zone= parameter', qr/zone|influencers_redis/,
        redis => $A);
refused('no address', qr/address|influencers_redis|arguments/,
        redis => 'zone=jobs');
refused('an address without a port', qr/127\.0\.0\.1|address/,
        redis => 'zone=jobs 127.0.0.1');
refused('a port that is not a number', qr/127\.0\.0\.1:abc|port|address/,
        redis => 'zone=jobs 127.0.0.1:abc');
refused('port 0', qr/127\.0\.0\.1:0|port/,
        redis => 'zone=jobs 127.0.0.1:0');
refused('port 70000', qr/70000|port/,
        redis => 'zone=jobs 127.0.0.1:70000');
refused('an empty unix: path', qr/unix:|address|path/,
        redis => 'zone=jobs unix:');
refused('a bad timeout', qr/timeout=abc|timeout/,
        redis => "zone=jobs $A timeout=abc");
refused('a zero timeout', qr/timeout/,
        redis => "zone=jobs $A timeout=0");
refused('a bad connect_timeout', qr/connect_timeout/,
        redis => "zone=jobs $A connect_timeout=-5");
refused('on_error=502', qr/on_error/,
        redis => "zone=jobs $A on_error=502");
refused('on_error=retry', qr/on_error/,
        redis => "zone=jobs $A on_error=retry");
refused('a bad db', qr/db/,
        redis => "zone=jobs $A db=abc");
refused('a negative db', qr/db/,
        redis => "zone=jobs $A db=-1");
refused('an empty prefix', qr/prefix/,
        redis => "zone=jobs $A prefix=");
refused('an unknown parameter', qr/foo/,
        redis => "zone=jobs $A foo=bar");
refused('a duplicate influencers_redis for one zone', qr/duplicate|already|jobs/,
        redis => "zone=jobs $A;\n    influencers_redis zone=jobs 127.0.0.1:6390");
refused('a parameter given twice', qr/timeout/,
        redis => "zone=jobs $A timeout=100ms timeout=200ms");
refused('user= without password=', qr/user|password/,
        redis => "zone=jobs $A user=gw");
refused('an empty password=', qr/password/,
        redis => "zone=jobs $A password=");
refused('the address not right after zone=', qr/address|influencers_redis/,
        redis => "zone=jobs password=x $A");
refused('a parameter without =', qr/local|parameter/,
        redis => "zone=jobs $A local");
refused('a timeout over 60s', qr/timeout/,
        redis => "zone=jobs $A timeout=2m");
refused('influencers_redis in a server block', qr/not allowed|influencers_redis/,
        server => "influencers_redis zone=jobs $A;");

# a secret never echoed: a misspelt password parameter, or one given twice
for my $args ("zone=jobs $A passwd=S3cr3t-Conf-Pw", "zone=jobs $A password=S3cr3t-Conf-Pw password=S3cr3t-Conf-Pw") {
    my ($rc, $msg) = try_conf(redis => $args);
    my (undef, $out) = $t->test_config;
    isnt($rc, 0, "refused: $args");
    unlike($out, qr/S3cr3t-Conf-Pw/, '... and the message does not echo the secret') or diag($out);
}

$t->check_log_clean(allow_emerg => 1);

done_testing;
