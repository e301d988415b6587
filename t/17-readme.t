#!/usr/bin/perl

# The README's complete configurations are the ones operators copy: each
# passes `nginx -t` with the built module, and the directory-file one,
# started as written (paths and ports aside), accepts the reference page's
# request end to end.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

open my $fh, '<', "$FindBin::Bin/../README.md" or die "README.md: $!";
my $readme = do { local $/; <$fh> };
close $fh;

my @blocks = grep { /load_module/ } $readme =~ /```nginx\n(.*?)```/sg;
is(scalar @blocks, 3, 'the README has three complete configurations (the third in fleet mode)');

sub adapt {
    my ($t, $conf) = @_;
    my $d = $t->dir;
    my $module = module_path();
    $conf =~ s|load_module \S+;|load_module $module;\ndaemon off;\n%%MAIN_GLOBALS%%|;
    $conf =~ s|events \{\}|events { worker_connections 64; }|;
    $conf =~ s|http \{|http {\n    %%HTTP_GLOBALS%%|;
    $conf =~ s{/etc/nginx/influencers-directory\.json}{$d/directory.json}g;
    $conf =~ s{/var/lib/nginx/influencers\.state}{$d/influencers.state}g;
    $conf =~ s{listen 80;}{listen 127.0.0.1:%%PORT%%;}g;
    $conf =~ s{server 127\.0\.0\.1:9000;}{server 127.0.0.1:%%BACKEND_PORT%%;}g;
    $conf =~ s{server 127\.0\.0\.1:9100;}{server 127.0.0.1:%%PORT_AUTH%%;}g;
    return $conf;
}

for my $i (0 .. $#blocks) {
    my $t = InfTest->new;
    $t->write_directory;
    $t->conf(adapt($t, $blocks[$i]));
    my ($rc, $err) = $t->test_config;
    is($rc, 0, "README configuration " . ($i + 1) . " passes nginx -t")
        or diag $err;
}

# the first one, running: the path to the backend is /v1/jobs there
my $t = InfTest->new;
$t->write_directory;
$t->conf(adapt($t, $blocks[0]));
$t->start_backend;
$t->run;

my $r = $t->http('POST', '/v1/projects/' . P_FEMALE . '/influencers',
    [ Authorization => 'Bearer ' . K_WRITE,
      'Content-Type' => 'application/json',
      'Idempotency-Key' => '8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55' ],
    '{"gender":"female","ageRange":"young_adult",'
    . '"prompt":"barista energy, soft morning light"}');
check_accepted($r, 'the README configuration accepts the reference request');

my @fw = $t->wait_backend_requests(1);
is(scalar @fw, 1, 'one job forwarded');
is($fw[0]{uri}, '/v1/jobs', 'to the backend path of the README');

$r = $t->http('GET', '/_influencers/stats');
is($r->status, 200, 'the stats location answers from loopback');

$t->check_log_clean;

done_testing;
