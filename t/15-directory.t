#!/usr/bin/perl

# CONTRACT 5: the directory file is read when nginx loads its configuration
# (a reload picks up a new one; a bad file never takes a running gateway
# down), and an API key never appears in a log line, an error body or the
# zone.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

my $K_NEW = 'sk_test_acme_rotated_31415926';
my $P_NEW = '7c2f5071-d193-4380-a4a2-809102a3b4c5';

# ------------------------------------------------------------ keys stay secret

my @answers = (
    $t->create(key => K_WRITE),
    $t->create(key => K_WRITE, project => P_GLOBEX),
    $t->create(key => K_WRITE, project => 'bad'),
    $t->create(key => K_WRITE, body => '{"name":"x"}'),
    $t->create(key => K_READ),
    $t->create(key => K_UNKNOWN),
    $t->create(auth => 'Basic ' . K_UNKNOWN),
);
is($answers[0]->status, 202, '(a job was accepted)');

my @secrets = (K_WRITE, K_READ, K_UNKNOWN);
my $leak = 0;
for my $r (@answers) {
    for my $k (@secrets) {
        $leak++ if index($r->raw, $k) >= 0;
    }
}
is($leak, 0, 'no API key in any answer (headers or body)');

my @fw = $t->backend_requests;
is(scalar(grep { my $x = $_; grep { index($x->{body} . join('', map { @$_ } @{ $x->{headers} }), $_) >= 0 } @secrets } @fw),
   0, 'no API key in any forward');

# the zone: the workers' shared memory
my ($w) = $t->worker_pids;
my $shm = $t->shared_memory_of($w);
SKIP: {
    skip 'cannot read the workers\' shared memory', 1 unless defined $shm && length $shm;
    is(scalar(grep { index($shm, $_) >= 0 } @secrets), 0,
       'no API key in the shared memory (the zone)');
}

# ------------------------------------------------------------ reload

$t->write_directory(
    keys => [ { key => $K_NEW, org => 'org_acme', scopes => ['influencers:write'] } ],
    projects => [ { id => $P_NEW, org => 'org_acme', targetGender => 'male' } ],
);
ok($t->reload, 'reload with a new directory file: new workers');

my $r = $t->create(key => $K_NEW, project => $P_NEW);
check_accepted($r, 'after reload: the new key on the new project is accepted');
my @req = $t->backend_requests;
is(json_decode($req[-1]{body})->{params}{gender}, 'male',
   'after reload: the new project\'s targetGender applies');
check_error($t->create(key => K_WRITE, project => $P_NEW), 401, 'UNAUTHENTICATED',
            undef, 'after reload: a key removed from the file is refused');
check_error($t->create(key => $K_NEW, project => P_FEMALE), 404, 'NOT_FOUND',
            undef, 'after reload: a project removed from the file is not found');

# a bad file: the reload is refused, the gateway goes on with the old one
my @workers = $t->worker_pids;
$t->write_file('directory.json', '{"keys": [ {"sha256": "nope"');
ok(!$t->reload, 'reload with a broken directory file: refused');
ok($t->nginx_alive, 'broken directory file: nginx still running');
is_deeply([$t->worker_pids], \@workers, 'broken directory file: the same workers');
like($t->error_log, qr/\[emerg\].*directory\.json/,
     'broken directory file: an [emerg] names the file');
check_accepted($t->create(key => $K_NEW, project => $P_NEW),
               'broken directory file: the loaded directory still serves');

$t->write_file('directory.json', '');
ok(!$t->reload, 'reload with an empty directory file: refused');
check_accepted($t->create(key => $K_NEW, project => $P_NEW),
               'empty directory file: the loaded directory still serves');

unlink $t->path('directory.json');
ok(!$t->reload, 'reload with the directory file gone: refused');
check_accepted($t->create(key => $K_NEW, project => $P_NEW),
               'directory file gone: the loaded directory still serves');

$t->write_directory;
ok($t->reload, 'reload with the original file: accepted');
check_accepted($t->create(key => K_WRITE), 'the original key works again');

# ------------------------------------------------------------ logs

$t->stop;
my $log = $t->error_log;
my @lines = grep {
    my $l = $_;
    grep { index($l, $_) >= 0 } (@secrets, $K_NEW)
} split /\n/, $log;
# nginx's core logs every request header at debug level; that is not ours
@lines = grep { !/ http header: "Authorization: / } @lines;
is(scalar @lines, 0, 'no API key in error.log (besides nginx core\'s header debug lines)')
    or diag join "\n", @lines[0 .. ($#lines < 5 ? $#lines : 5)];
my $access = $t->read_file('access.log') // '';
is(scalar(grep { index($access, $_) >= 0 } @secrets, $K_NEW), 0,
   'no API key in access.log');

$t->check_log_clean(allow_emerg => 1);

done_testing;
