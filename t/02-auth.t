#!/usr/bin/perl

# CONTRACT 1 (Authorization, scope), 2 (401, 403 rows), 7 (Bearer
# case-insensitive, one or more spaces).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);
use Digest::SHA ();

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

my $MSG401 = 'Missing or invalid API key.';
my $MSG403 = 'API key lacks the influencers:write scope.';

sub unauth {
    my ($r, $name) = @_;
    check_error($r, 401, 'UNAUTHENTICATED', $MSG401, "$name: 401");
    is($r->header('www-authenticate'), 'Bearer',
       "$name: WWW-Authenticate: Bearer");
}

# ------------------------------------------------------------ 401

unauth($t->create(key => undef), 'no Authorization');
unauth($t->create(auth => ''), 'empty Authorization');
unauth($t->create(auth => 'Bearer'), 'scheme without a key');
unauth($t->create(auth => 'Bearer '), 'scheme and a space, no key');
unauth($t->create(auth => 'Bearer' . K_WRITE), 'no space after Bearer');
unauth($t->create(auth => 'Basic ' . K_WRITE), 'wrong scheme (Basic)');
unauth($t->create(auth => 'Token ' . K_WRITE), 'wrong scheme (Token)');
unauth($t->create(auth => 'Bearerx ' . K_WRITE), 'scheme with an extra letter');
unauth($t->create(auth => K_WRITE), 'key without a scheme');
unauth($t->create(key => K_UNKNOWN), 'unknown key');
unauth($t->create(key => uc K_WRITE), 'key in another case (keys are exact)');
unauth($t->create(key => K_WRITE . 'x'), 'key with an extra character');
unauth($t->create(key => substr(K_WRITE, 0, -1)), 'key missing a character');
unauth($t->create(auth => 'Bearer ' . K_WRITE . ' ' . K_WRITE),
       'two keys after the scheme');
unauth($t->create(auth => 'Bearer ' . Digest::SHA::sha256_hex(K_WRITE)),
       'the digest itself is not a key');

my $r = $t->create(key => K_UNKNOWN);
unlike($r->body, qr/\Q${\K_UNKNOWN}\E/, '401 body does not echo the key');

# ------------------------------------------------------------ accepted forms

check_accepted($t->create(key => K_WRITE), 'Bearer <key>: accepted');
check_accepted($t->create(auth => 'bearer ' . K_WRITE),
               'scheme in lowercase: accepted');
check_accepted($t->create(auth => 'BEARER ' . K_WRITE),
               'scheme in uppercase: accepted');
check_accepted($t->create(auth => 'bEaReR ' . K_WRITE),
               'scheme in mixed case: accepted');
check_accepted($t->create(auth => 'Bearer   ' . K_WRITE),
               'several spaces after the scheme: accepted');

# ------------------------------------------------------------ scope

check_error($t->create(key => K_READ), 403, 'FORBIDDEN_SCOPE', $MSG403,
            'key with influencers:read only: 403');
check_error($t->create(key => K_NOSCOPE), 403, 'FORBIDDEN_SCOPE', $MSG403,
            'key without scopes: 403');
check_error($t->create(key => K_WRITER), 403, 'FORBIDDEN_SCOPE', $MSG403,
            'key with the look-alike scope influencers:writer: 403');
check_accepted($t->create(key => K_MULTI),
               'key with several scopes including influencers:write: accepted');

$r = $t->create(key => K_READ);
ok(!defined $r->header('www-authenticate'), '403: no WWW-Authenticate');

# authentication before scope, scope before the rest
check_error($t->create(key => K_UNKNOWN, project => 'nope'), 401,
            'UNAUTHENTICATED', $MSG401, 'unknown key and bad projectId: 401');
check_error($t->create(key => K_READ, project => 'nope'), 403,
            'FORBIDDEN_SCOPE', $MSG403, 'read-only key and bad projectId: 403');
check_error($t->create(key => K_READ, project => P_GLOBEX), 403,
            'FORBIDDEN_SCOPE', $MSG403,
            'read-only key and another org\'s project: 403');

my @jobs = $t->backend_requests;
is(scalar @jobs, 6, 'only the accepted requests were forwarded');

$t->check_log_clean;

done_testing;
