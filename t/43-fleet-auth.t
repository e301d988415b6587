#!/usr/bin/perl

# CONTRACT 6: Redis reached with a password or an ACL user, and the other
# connection settings of influencers_redis.
#
#   - requirepass on Redis: a node with the right password= works (accept,
#     replay from another node); a node with a wrong one answers its first
#     keyed request 503 UNAVAILABLE (fast) and logs [error] ... refused
#     AUTH; a node without password= is refused too; requests without a
#     key are served by all of them;
#   - an ACL user (user= and password=) holding only the commands the
#     module needs works; a wrong user password is refused AUTH;
#   - no password appears in any log (error.log at debug level,
#     access.log, nginx's stderr, Redis's log);
#   - db=N puts the keys in that database, prefix= names them; a unix:
#     socket address works.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes ();
use File::Find ();
use InfTest qw(:all);

plan skip_all => InfTest::redis_missing() if InfTest::redis_missing();
plan skip_all => 'module not built: ' . module_path() unless have_module();

my $PW       = "Fl33t-pw-$$-secret";
my $WRONG    = "Wr0ng-pw-$$-guess";
my $USER     = 'gwfleet';
my $USER_PW  = "Us3r-pw-$$-acl";
my $USER_BAD = "Us3r-bad-$$-acl";
my @PASSWORDS = ($PW, $WRONG, $USER_PW, $USER_BAD);

my $t = InfTest->new(log_level => 'debug');
$t->write_directory;
$t->start_redis(requirepass => $PW, unixsocket => 1);
$t->start_backend;
$t->conf($t->default_conf(server => STATS_LOCATION,
    redis => "zone=jobs 127.0.0.1:%%REDIS_PORT%% password=$PW"));
$t->run;

my @NODES = ($t);

# another gateway node on the same Redis and backend, with these
# influencers_redis arguments after zone=jobs
sub node {
    my ($args) = @_;
    my $n = $t->peer;
    $n->write_directory;
    $n->conf($n->default_conf(server => STATS_LOCATION, redis => "zone=jobs $args"));
    $n->run;
    push @NODES, $n;
    return $n;
}

my $seq = 0;
sub fresh { return sprintf('fleet-auth-%s-%d-%d', $_[0], $$, ++$seq); }

sub refused {
    my ($n, $name) = @_;
    my $t0 = Time::HiRes::time();
    my $r = $n->idem(fresh('refused'));
    my $sec = Time::HiRes::time() - $t0;
    check_error($r, 503, 'UNAVAILABLE', undef, "$name: the first keyed request: 503 UNAVAILABLE");
    cmp_ok($sec, '<', 1, sprintf('... answered at once (%.3f s)', $sec));
    is($n->create(body => '{}')->status, 202, "$name: a request without a key: 202");
    return $r;
}

# ------------------------------------------------ requirepass

my $good = node("127.0.0.1:%%REDIS_PORT%% password=$PW");
{
    my $r1 = $t->idem('fleet-auth-1');
    check_new_job($r1, 'password= right: a new key: 202');
    check_replay($good->idem('fleet-auth-1'), $r1,
                 'another node with the right password replays it');
    my @k = $t->redis_keys('influencers:*');
    cmp_ok(scalar @k, '>=', 1, 'the entry is in Redis');
}

my $wrong = node("127.0.0.1:%%REDIS_PORT%% password=$WRONG");
refused($wrong, 'password= wrong');
{
    my @l = $wrong->log_lines(qr/\[error\].*refused AUTH/);
    cmp_ok(scalar @l, '>=', 1, 'a wrong password: [error] ... refused AUTH in error.log')
        or diag(join "\n", grep { /redis/i } split /\n/, $wrong->error_log);
    note($l[0] // '');
    refused($wrong, 'password= wrong, again');
}

my $none = node('127.0.0.1:%%REDIS_PORT%%');
refused($none, 'no password= on a Redis that requires one');
{
    my @l = $none->log_lines(qr/\[error\].*(?i:redis|auth)/);
    cmp_ok(scalar @l, '>=', 1, 'no password: an [error] line says why')
        or diag(join "\n", grep { /redis/i } split /\n/, $none->error_log);
    note($l[0] // '');
}

# ------------------------------------------------ an ACL user

SKIP: {
    my $acl = $t->redis('ACL', 'SETUSER', $USER, 'reset', 'on', ">$USER_PW",
        '~influencers:*', 'resetchannels', '-@all',
        '+evalsha', '+eval', '+script|load', '+script|exists', '+ping',
        '+select', '+info', '+get', '+set', '+del', '+pexpire', '+pttl', '+time',
        '+exists');
    skip "ACL SETUSER failed: " . (InfTest::redis_error($acl) // ''), 9
        unless defined $acl && !ref $acl && $acl eq 'OK';
    note('ACL user: ' . join ' ', @{ $t->redis('ACL', 'LIST') || [] });

    my $user = node("127.0.0.1:%%REDIS_PORT%% user=$USER password=$USER_PW");
    my $r = $user->idem('fleet-acl-1');
    check_new_job($r, "ACL user $USER with only the needed commands: a new key: 202")
        or diag(join "\n", grep { /\[(?:error|warn)\]/ } split /\n/, $user->error_log);
    check_replay($user->idem('fleet-acl-1'), $r, '... its replay');
    check_replay($t->idem('fleet-acl-1'), $r, '... replayed by a node with the default user');
    is($user->idem('fleet-acl-1', body => '{"prompt":"other"}')->status, 422,
       '... and another body is 422');

    my $bad = node("127.0.0.1:%%REDIS_PORT%% user=$USER password=$USER_BAD");
    refused($bad, 'ACL user, wrong password');
    cmp_ok(scalar(my @l = $bad->log_lines(qr/\[error\].*refused AUTH/)), '>=', 1,
           'ACL user, wrong password: [error] ... refused AUTH');
}

# ------------------------------------------------ db=, prefix=, unix:

{
    my $db = node("127.0.0.1:%%REDIS_PORT%% password=$PW db=3 prefix=fleetdb");
    check_new_job($db->idem('fleet-db-1'), 'db=3 prefix=fleetdb: a new key: 202');
    my @in3 = $t->redis_keys('fleetdb:*', 3);
    is(scalar @in3, 1, 'its key is in database 3');
    like($in3[0] // '', qr/^fleetdb:[0-9a-f]{16}:[0-9a-f]{64}$/, '... named fleetdb:<16 hex>:<64 hex>');
    is(scalar(my @in0 = $t->redis_keys('fleetdb:*', 0)), 0, '... and none in database 0');
    # another prefix is another deployment: the same key is a new job there
    check_new_job($t->idem('fleet-db-1'), 'the same key on a node of prefix influencers, db 0: a new job');

    # a database Redis does not have (it has 16): refused, and said why
    my $nodb = node("127.0.0.1:%%REDIS_PORT%% password=$PW db=99");
    refused($nodb, 'db=99 on a Redis of 16 databases');
    cmp_ok(scalar(my @l = $nodb->log_lines(qr/\[error\].*refused SELECT/)), '>=', 1,
           'db=99: [error] ... refused SELECT')
        or diag(join "\n", grep { /redis/i } split /\n/, $nodb->error_log);

    my $unix = node('unix:' . $t->redis_socket . " password=$PW");
    my $r = $unix->idem('fleet-unix-1');
    check_new_job($r, 'a unix: socket address: a new key: 202');
    check_replay($t->idem('fleet-unix-1'), $r, '... replayed by a node on TCP');
}

# ------------------------------------------------ no password in any log

{
    $_->stop for @NODES;
    my @files;
    for my $n (@NODES) {
        File::Find::find({ no_chdir => 1, wanted => sub {
            push @files, $_ if -f $_ && $_ !~ m{/(?:nginx\.conf|directory\.json)$}
                               && $_ !~ m{/redis-data/};
        } }, $n->dir);
    }
    my (@leaks, $bytes);
    for my $f (@files) {
        my $c = $t->read_file($f) // '';
        $bytes += length $c;
        for my $pw (@PASSWORDS) {
            push @leaks, "$f: $pw" if index($c, $pw) >= 0;
        }
    }
    cmp_ok($bytes, '>', 0, 'logs to look at (' . scalar(@files) . ' files, debug level)');
    is(scalar @leaks, 0, 'no password in any log (error.log, access.log, stderr, Redis\'s log)')
        or diag(join "\n", @leaks);
}

for my $n (@NODES) {
    $n->check_log_clean;
}

done_testing;
