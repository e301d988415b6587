#!/usr/bin/perl

# CONTRACT 5 (a bad directory file fails nginx -t) and the directives'
# checks: every configuration error fails `nginx -t` with an [emerg].

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA ();
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->new;

my $H = Digest::SHA::sha256_hex('some key');
my $H2 = Digest::SHA::sha256_hex('other key');
my $U1 = P_FEMALE;
my $U2 = P_MALE;

sub ok_config {
    my ($name, %conf) = @_;
    $t->conf($t->default_conf(%conf));
    my ($rc, $err) = $t->test_config;
    is($rc, 0, "$name: nginx -t passes") or diag $err;
}

sub bad_config {
    my ($name, $re, %conf) = @_;
    $t->conf($t->default_conf(%conf));
    my ($rc, $err) = $t->test_config;
    subtest "$name: nginx -t fails" => sub {
        isnt($rc, 0, 'exit code is not 0');
        like($err, qr/\[emerg\]/, 'an [emerg] line');
        like($err, $re, "the [emerg] says $re") if $re;
        unlike($err, qr/\[alert\]|Sanitizer|Segmentation/, 'no crash');
    } or diag $err;
    return $err;
}

# ------------------------------------------------------------ directory files

sub dir_file {
    my ($name, $content, $re) = @_;
    $t->write_file('dir-under-test.json', $content);
    my $path = $t->path('dir-under-test.json');
    my $err = bad_config("directory: $name", undef,
        identity => "influencers_directory $path;");
    subtest "directory: $name: the message" => sub {
        like($err, qr/\[emerg\].*\Q$path\E/, 'the [emerg] names the file');
        like($err, $re, "the [emerg] says $re") if $re;
    };
}

sub dir_json { return InfTest::json_encode($_[0]); }

$t->write_directory;
ok_config('the default directory file');

ok_config('a directory with no keys and no projects',
          identity => "influencers_directory ${\$t->write_file('empty.json', '{\"keys\":[],\"projects\":[]}')};");

ok_config('optional label and targetGender left out',
          identity => "influencers_directory ${\$t->write_file('min.json', dir_json({
              keys => [{ sha256 => $H, org => 'o', scopes => ['influencers:write'] }],
              projects => [{ id => $U1, org => 'o' }] }))};");

{
    my $path = $t->path('missing.json');
    my $err = bad_config('directory: file missing', qr/cannot open/,
                         identity => "influencers_directory $path;");
    like($err, qr/\[emerg\].*\Q$path\E/, 'directory: file missing: the [emerg] names the file');
}

dir_file('not JSON', '{"keys": [', qr/invalid JSON/);
dir_file('empty file', '', qr/invalid JSON/);
dir_file('sha256 too short',
    dir_json({ keys => [{ sha256 => 'abc', org => 'o', scopes => [] }], projects => [] }),
    qr/keys\[0\]: "sha256" must be 64 hexadecimal digits/);
dir_file('sha256 with a non-hex digit',
    dir_json({ keys => [{ sha256 => $H, org => 'o', scopes => [] },
                        { sha256 => ('g' . substr($H2, 1)), org => 'o', scopes => [] }],
               projects => [] }),
    qr/keys\[1\]: "sha256" must be 64 hexadecimal digits/);
dir_file('sha256 of 65 digits',
    dir_json({ keys => [{ sha256 => "${H}0", org => 'o', scopes => [] }], projects => [] }),
    qr/keys\[0\]: "sha256" must be 64 hexadecimal digits/);
dir_file('sha256 not a string',
    dir_json({ keys => [{ sha256 => 12, org => 'o', scopes => [] }], projects => [] }),
    qr/keys\[0\]: "sha256" must be 64 hexadecimal digits/);
dir_file('project id not a UUID',
    dir_json({ keys => [], projects => [{ id => $U1, org => 'o' },
                                        { id => 'project-1', org => 'o' }] }),
    qr/projects\[1\]: "id" must be a UUID/);
dir_file('duplicate key',
    dir_json({ keys => [{ sha256 => $H, org => 'o', scopes => [] },
                        { sha256 => $H, org => 'p', scopes => [] }], projects => [] }),
    qr/keys\[1\]: duplicate key/);
dir_file('duplicate key in another case',
    dir_json({ keys => [{ sha256 => $H, org => 'o', scopes => [] },
                        { sha256 => uc $H, org => 'p', scopes => [] }], projects => [] }),
    qr/keys\[1\]: (?:duplicate key|"sha256" must be 64 hexadecimal digits)/);
dir_file('duplicate project',
    dir_json({ keys => [], projects => [{ id => $U1, org => 'o' }, { id => $U2, org => 'o' },
                                        { id => $U1, org => 'p' }] }),
    qr/projects\[2\]: duplicate project/);
dir_file('duplicate project in another case',
    dir_json({ keys => [], projects => [{ id => $U1, org => 'o' },
                                        { id => uc $U1, org => 'o' }] }),
    qr/projects\[1\]: duplicate project/);
dir_file('unknown field in a key',
    dir_json({ keys => [{ sha256 => $H, org => 'o', scopes => [], foo => 1 }],
               projects => [] }),
    qr/keys\[0\]: unknown field "foo"/);
dir_file('a key in clear is an unknown field',
    dir_json({ keys => [{ key => 'sk_live_x', org => 'o', scopes => [] }],
               projects => [] }),
    qr/keys\[0\]: unknown field "key"/);
dir_file('unknown field in a project',
    dir_json({ keys => [], projects => [{ id => $U1, org => 'o', foo => 'x' }] }),
    qr/projects\[0\]: unknown field "foo"/);
dir_file('unknown field at the top',
    dir_json({ keys => [], projects => [], foo => [] }),
    qr/unknown field "foo"/);

# not named by the spec: a careful gateway refuses them too
dir_file('top level not an object', '[]');
dir_file('keys not an array', dir_json({ keys => {}, projects => [] }));
dir_file('a key without org',
    dir_json({ keys => [{ sha256 => $H, scopes => [] }], projects => [] }));
dir_file('a key without sha256',
    dir_json({ keys => [{ org => 'o', scopes => [] }], projects => [] }));
dir_file('scopes not an array of strings',
    dir_json({ keys => [{ sha256 => $H, org => 'o', scopes => 'influencers:write' }],
               projects => [] }));
dir_file('a project without org',
    dir_json({ keys => [], projects => [{ id => $U1 }] }));
dir_file('targetGender out of its enum',
    dir_json({ keys => [], projects => [{ id => $U1, org => 'o', targetGender => 'robot' }] }));

# ------------------------------------------------------------ directives

ok_config('all directives with valid values',
          zone => 'zone=jobs:1m ttl=1h lease=30s',
          location => "influencers_body_limit 2k;\n influencers_retry_after 10s;\n"
                    . ' influencers_other_methods @other;',
          server => 'location @other { return 200; }');

bad_config('influencers_zone: size not a size', qr/jobs:abc/, zone => 'zone=jobs:abc');
bad_config('influencers_zone: size under 8 pages', qr/16k/, zone => 'zone=jobs:16k');
bad_config('influencers_zone: no size', qr/zone=jobs/, zone => 'zone=jobs');
bad_config('influencers_zone: no zone=', qr/jobs:1m/, zone => 'jobs:1m');
bad_config('influencers_zone: bad ttl', qr/ttl/, zone => 'zone=jobs:1m ttl=abc');
bad_config('influencers_zone: bad lease', qr/lease/, zone => 'zone=jobs:1m lease=abc');
bad_config('influencers_zone: unknown parameter', qr/foo=1/, zone => 'zone=jobs:1m foo=1');
bad_config('influencers_body_limit: not a size', qr/influencers_body_limit/,
           location => 'influencers_body_limit abc;');
bad_config('influencers_body_limit over client_body_buffer_size',
           qr/client_body_buffer_size/,
           location => "client_body_buffer_size 8k;\n influencers_body_limit 16k;");
ok_config('influencers_body_limit equal to client_body_buffer_size',
          location => "client_body_buffer_size 8k;\n influencers_body_limit 8k;");
bad_config('client_body_in_file_only in the endpoint location',
           qr/client_body_in_file_only/,
           location => 'client_body_in_file_only on;');
bad_config('influencers_retry_after: not a time', qr/influencers_retry_after/,
           location => 'influencers_retry_after abc;');
bad_config('influencers_other_methods: another status', qr/404/,
           location => 'influencers_other_methods 404;');
bad_config('influencers_other_methods: not a named location', qr{/other},
           location => 'influencers_other_methods /other;');

# the endpoint's own requirements
$t->conf(<<'EOF');
load_module %%MODULE%%;
%%MAIN_GLOBALS%%
events { }
http {
    %%HTTP_GLOBALS%%
    influencers_zone zone=jobs:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            influencers;
            influencers_backend /_render;
            influencers_directory %%TESTDIR%%/directory.json;
        }
        location = /_render { internal; return 202; }
    }
}
EOF
my ($rc, $err) = $t->test_config;
isnt($rc, 0, 'influencers without zone=: nginx -t fails') or diag $err;
like($err, qr/\[emerg\].*"influencers"/, 'influencers without zone=: the [emerg] names it');

bad_config('influencers zone=NAME of an unknown zone', qr/"nope"/,
           match => '/other/', location => '', server => <<'EOF');
        location /v1/ {
            influencers zone=nope;
            influencers_backend /_render;
            influencers_directory %%TESTDIR%%/directory.json;
        }
EOF

bad_config('influencers without influencers_backend', qr/influencers_backend/,
           match => '/other/', server => <<'EOF');
        location /v1/ {
            influencers zone=jobs;
            influencers_directory %%TESTDIR%%/directory.json;
        }
EOF

bad_config('influencers without any identity source',
           qr/influencers_directory|influencers_org/,
           match => '/other/', server => <<'EOF');
        location /v1/ {
            influencers zone=jobs;
            influencers_backend /_render;
        }
EOF

bad_config('both influencers_directory and influencers_org',
           qr/influencers_directory.*influencers_org|influencers_org.*influencers_directory/,
           location => 'influencers_org $http_x_org;');

bad_config('influencers zone=jobs when only another zone is declared', qr/"jobs"/,
           zone => 'zone=other:1m');

$t->check_log_clean(allow_emerg => 1);

done_testing;
