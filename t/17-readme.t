#!/usr/bin/perl

# The README's complete configurations are the ones operators copy: each
# passes `nginx -t` with the built module, and each is served once, for
# real: the standalone one with the directory file, the one behind an
# existing auth_request service, two renderer servers behind a keepalive
# upstream (the first one down: the forward moves on), TLS and HTTP/2 on
# the partner side, and the fleet one with a Redis of its own.

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
is(scalar @blocks, 5, 'the README has five complete configurations');

sub kind {
    my ($conf) = @_;
    return 'fleet' if $conf =~ /influencers_redis/;
    return 'auth_request' if $conf =~ /auth_request/;
    return 'two renderers' if $conf =~ /proxy_next_upstream/;
    return 'tls' if $conf =~ /ssl_certificate/;
    return 'standalone';
}

my %by = map { kind($_) => $_ } @blocks;
is_deeply([sort keys %by], ['auth_request', 'fleet', 'standalone', 'tls', 'two renderers'],
          'one of each kind');

sub adapt {
    my ($t, $conf) = @_;
    my $d = $t->dir;
    $conf =~ s|load_module \S+;|load_module %%MODULE%%;\ndaemon off;\n%%MAIN_GLOBALS%%|;
    $conf =~ s|events \{\}|events { worker_connections 64; }|;
    $conf =~ s|http \{|http {\n    %%HTTP_GLOBALS%%|;
    $conf =~ s{/etc/nginx/influencers-directory\.json}{$d/directory.json}g;
    $conf =~ s{/var/lib/nginx/influencers\.state}{$d/influencers.state}g;
    $conf =~ s{/etc/nginx/tls/gateway\.(pem|key)}{$d/gateway.$1}g;
    $conf =~ s{listen 80;}{listen 127.0.0.1:%%PORT%%;}g;
    $conf =~ s{listen 443 ssl http2;}{listen 127.0.0.1:%%PORT%% ssl http2;}g;
    $conf =~ s{server 127\.0\.0\.1:9000}{server 127.0.0.1:%%BACKEND_PORT%%}g;
    $conf =~ s{server 127\.0\.0\.1:9001}{server 127.0.0.1:%%PORT_RENDER2%%}g;
    $conf =~ s{server 127\.0\.0\.1:9100;}{server 127.0.0.1:%%PORT_AUTH%%;}g;
    $conf =~ s{10\.0\.1\.10:8080}{127.0.0.1:%%BACKEND_PORT%%}g;
    $conf =~ s{influencers_redis zone=jobs 10\.0\.0\.5:6379}
              {influencers_redis zone=jobs 127.0.0.1:%%PORT_REDIS%%}g;
    return $conf;
}

sub certificate {
    my ($t) = @_;
    my $d = $t->dir;
    system('openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 '
           . "-nodes -days 1 -subj /CN=localhost -keyout $d/gateway.key "
           . "-out $d/gateway.pem > $d/openssl.log 2>&1");
    return -s "$d/gateway.pem";
}

my $have_openssl = !system('openssl version > /dev/null 2>&1');

for my $kind (sort keys %by) {
    my $t = InfTest->new;
    $t->write_directory;
    certificate($t) if $kind eq 'tls' && $have_openssl;
    $t->conf(adapt($t, $by{$kind}));
    SKIP: {
        skip 'no openssl to make a certificate', 1
            if $kind eq 'tls' && !$have_openssl;
        my ($rc, $err) = $t->test_config;
        is($rc, 0, "README configuration \"$kind\" passes nginx -t")
            or diag $err;
    }
    $t->cleanup;
}

my @REQ = ('POST', '/v1/projects/' . P_FEMALE . '/influencers');
my $BODY = '{"gender":"female","ageRange":"young_adult",'
         . '"prompt":"barista energy, soft morning light"}';

sub reference_request {
    my ($t, $key, $idem) = @_;
    return $t->http(@REQ,
        [ Authorization => "Bearer $key",
          'Content-Type' => 'application/json',
          'Idempotency-Key' => $idem ], $BODY);
}

# ---------------------------------------------------------------- standalone

{
    my $t = InfTest->new;
    $t->write_directory;
    $t->conf(adapt($t, $by{standalone}));
    $t->start_backend;
    $t->run;

    my $r = reference_request($t, K_WRITE, '8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55');
    check_accepted($r, 'standalone: the reference request is accepted');

    my @fw = $t->wait_backend_requests(1);
    is(scalar @fw, 1, 'standalone: one job forwarded');
    is($fw[0]{uri}, '/v1/jobs', 'standalone: to the backend path of the README');

    $r = $t->http('GET', '/_influencers/stats');
    is($r->status, 200, 'standalone: the stats location answers from loopback');

    $t->check_log_clean;
    $t->cleanup;
}

# ---------------------------------------------------------------- auth_request

{
    my $t = InfTest->new;
    $t->write_directory;
    $t->conf(adapt($t, $by{auth_request}));
    $t->start_backend(name => 'auth', control => {
        status => 200, body => '',
        rules => [
            { header => 'authorization', value => 'Bearer readme-writer',
              headers => { 'X-Org' => 'org_acme',
                           'X-Scopes' => 'influencers:write',
                           'X-Target-Gender' => 'male' } },
        ],
    });
    $t->start_backend;
    $t->run;

    my $r = reference_request($t, 'readme-writer', 'readme-auth-1');
    check_accepted($r, 'auth_request: the key the auth service knows is accepted');
    my @fw = $t->wait_backend_requests(1);
    is(scalar @fw, 1, 'auth_request: one job forwarded');
    like($fw[0]{body} // '', qr/"orgId":"org_acme"/,
         'auth_request: with the org the auth service named');

    $r = reference_request($t, 'readme-unknown', 'readme-auth-2');
    is($r->status, 401, 'auth_request: a key it does not know: 401');

    $t->check_log_clean;
    $t->cleanup;
}

# ---------------------------------------------------------------- two renderers

{
    my $t = InfTest->new;
    $t->write_directory;
    $t->conf(adapt($t, $by{'two renderers'}));

    # the first server is down (nothing listens on its port), the second up
    $t->start_backend(name => 'render2');
    $t->run;

    my $r = reference_request($t, K_WRITE, 'readme-two-1');
    check_accepted($r, 'two renderers, the first down: the job is accepted');

    my @fw;
    for (1 .. 50) {
        @fw = grep { $_->{uri} eq '/v1/jobs' } $t->backend_requests('render2');
        last if @fw;
        select(undef, undef, undef, 0.1);
    }
    is(scalar @fw, 1, 'two renderers: forwarded once, to the second server');

    $t->cleanup;
}

# ---------------------------------------------------------------- TLS, HTTP/2

SKIP: {
    skip 'no openssl to make a certificate', 4 unless $have_openssl;
    my $curl = `curl -V 2>/dev/null` // '';
    skip 'no curl with HTTP2', 4 unless $curl =~ /^Features:.*\bHTTP2\b/m;

    my $t = InfTest->new;
    $t->write_directory;
    certificate($t);
    $t->conf(adapt($t, $by{tls}));
    $t->start_backend;
    $t->run;

    my $d = $t->dir;
    my $url = 'https://127.0.0.1:' . $t->port . $REQ[1];
    my $out = `curl -sk --http2 --max-time 10 -o $d/curl.body -D $d/curl.head -w '%{http_version}' -X POST -H 'Authorization: Bearer ${\ K_WRITE}' -H 'Content-Type: application/json' -H 'Idempotency-Key: readme-tls-1' --data-binary '$BODY' '$url'`;
    is($out, '2', 'TLS: the partner speaks HTTP/2');
    my $head = $t->read_file('curl.head') // '';
    like($head, qr{^HTTP/2 202}m, 'TLS and HTTP/2: 202');
    like($t->read_file('curl.body') // '', ACCEPT_RE, 'TLS and HTTP/2: the job envelope');
    my @fw = $t->wait_backend_requests(1);
    is(scalar @fw, 1, 'TLS and HTTP/2: one job forwarded');

    $t->check_log_clean;
    $t->cleanup;
}

done_testing;
