#!/usr/bin/perl

# CONTRACT 1 (Idempotency-Key syntax) and 7 (quoted form, two lines).
# Replays and key reuse are the idempotency issue's, not tested here.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup;

my $BAD  = { fieldErrors => {
    'Idempotency-Key' => ['Must be 1-255 visible ASCII characters.'] } };
my $ONCE = { fieldErrors => { 'Idempotency-Key' => ['Must be sent once.'] } };
my $MSG  = 'Invalid Idempotency-Key header.';

my $n = 0;
sub uniq { return sprintf('k%04d-%s', ++$n, $_[0] // '') }

sub with_key {
    my (@values) = @_;
    return $t->create(headers => [ map { ('Idempotency-Key' => $_) } @values ]);
}

# ------------------------------------------------------------ accepted

check_accepted(with_key('8d2f1a3e-0b4c-4a11-9f7e-33c0a2c1bd55'),
               'a UUID key: accepted');
check_accepted(with_key('x'), 'a 1-character key: accepted');

my $k255 = uniq('') . ('a' x 250);
$k255 = substr($k255, 0, 255);
is(length $k255, 255, '(a key of 255 characters)');
check_accepted(with_key($k255), 'a key of 255 characters: accepted');

check_accepted(with_key(uniq('!#$%&\'*+-.^_`|~()<>@,;:/[]?={}"\\')),
               'a key with every kind of visible ASCII punctuation: accepted');

check_accepted(with_key('"' . uniq('quoted') . '"'),
               'the quoted structured-field form "abc": accepted');
check_accepted(with_key('"' . uniq('a\\"b') . '"'),
               'a quoted key with an escaped quote: accepted');
check_accepted(with_key('"' . uniq('a\\\\b') . '"'),
               'a quoted key with an escaped backslash: accepted');
my $q255 = substr(uniq('') . ('q' x 250), 0, 255);
check_accepted(with_key("\"$q255\""),
               'a quoted key whose inner value is 255 characters: accepted');

# ------------------------------------------------------------ rejected

my $k256 = substr(uniq('') . ('b' x 256), 0, 256);
check_validation(with_key($k256), $MSG, $BAD, 'a key of 256 characters: 422');
check_validation(with_key('x' x 1000), $MSG, $BAD, 'a key of 1000 characters: 422');
check_validation(with_key(''), $MSG, $BAD, 'an empty key: 422');
check_validation(with_key('a b'), $MSG, $BAD, 'a key with a space: 422');
check_validation(with_key("a\tb"), $MSG, $BAD, 'a key with a tab: 422');
check_validation(with_key("a\x7fb"), $MSG, $BAD, 'a key with DEL: 422');
check_validation(with_key("a\x01b"), $MSG, $BAD, 'a key with a control character: 422');
check_validation(with_key("cl\xc3\xa9"), $MSG, $BAD, 'a key with UTF-8 (non-ASCII): 422');
check_validation(with_key("k\xff"), $MSG, $BAD, 'a key with a byte over 0x7F: 422');

check_validation(with_key('"abc'), $MSG, $BAD, 'quoted form without its closing quote: 422');
check_validation(with_key('"abc"x'), $MSG, $BAD, 'quoted form with trailing characters: 422');
check_validation(with_key('""'), $MSG, $BAD, 'quoted form with an empty value: 422');
check_validation(with_key('"a\\qb"'), $MSG, $BAD, 'quoted form with a bad escape \\q: 422');
check_validation(with_key('"a"b"'), $MSG, $BAD, 'quoted form with an unescaped quote inside: 422');
check_validation(with_key('"abc\\"'), $MSG, $BAD, 'quoted form ending in an escaped quote: 422');
check_validation(with_key('"a b"'), $MSG, $BAD,
                 'quoted form whose inner value has a space: 422');
check_validation(with_key('"' . ('c' x 256) . '"'), $MSG, $BAD,
                 'quoted form whose inner value is 256 characters: 422');
check_validation(with_key('"'), $MSG, $BAD, 'a lone quote: 422');

check_validation(with_key(uniq('one'), uniq('two')), $MSG, $ONCE,
                 'two Idempotency-Key lines: 422 "Must be sent once."');
my $same = uniq('same');
check_validation(with_key($same, $same), $MSG, $ONCE,
                 'two identical Idempotency-Key lines: 422 "Must be sent once."');

# header name case does not matter
my $r = $t->create(headers => [ 'idempotency-key' => 'x' x 300 ]);
check_validation($r, $MSG, $BAD, 'lowercase header name, too long: 422');
$r = $t->create(headers => [ 'Idempotency-Key' => uniq('a'),
                             'IDEMPOTENCY-KEY' => uniq('b') ]);
check_validation($r, $MSG, $ONCE, 'two lines in different case: 422 "Must be sent once."');

is(scalar(my @b = $t->backend_requests), 8, 'only the accepted requests were forwarded');

$t->check_log_clean;

done_testing;
