#!/usr/bin/perl

# CONTRACT 1 (body, body fields), 2 (422 VALIDATION), 7 (body and
# validation): every message of the spec, all problems collected.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all :messages);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(http => endpoint_server(port => 'BIG', error_page => '',
    keepalive => 0, location => 'influencers_body_limit 8k;'));

my $BRAND = "Unrecognized key $EM brandVoice is inherited from the project; "
          . "override it with PATCH /v1/influencers/:id.";
my $LANG  = "Unrecognized key $EM language is inherited from the project; "
          . "override it with PATCH /v1/influencers/:id.";
my $DUP   = 'Duplicate key.';
my $MIN   = 'String must contain at least 1 character(s)';
my $MAX   = 'String must contain at most 60 character(s)';
sub type_msg { return "Expected string, received $_[0]" }
sub top_msg  { return "Expected object, received $_[0]" }

my $INVALID = 'Invalid body.';

sub bad {
    my ($body, $details, $name) = @_;
    check_validation($t->create(body => $body), $INVALID, $details, $name);
}

sub field { my ($f, @m) = @_; return { fieldErrors => { $f => [@m] } } }
sub form  { return { formErrors => [@_] } }

my $jobs = 0;

# accepted, and the forwarded params are exactly $params
sub good {
    my ($body, $params, $name, %o) = @_;
    my $r = $t->create(body => $body, %o);
    my $ok = check_accepted($r, "$name: accepted");
    $jobs++ if $ok;
    my @req = $t->backend_requests;
    my $fwd = @req ? json_decode($req[-1]{body}) : undef;
    is_deeply($fwd && $fwd->{params}, $params, "$name: forwarded params")
        or diag($req[-1]{body} // 'no forward');
    return $fwd;
}

my %D = (gender => 'female', ageRange => 'young_adult');   # P_FEMALE defaults

# ------------------------------------------------------------ the reference page

bad('{"name":"Ava"}', field(name => $NAME),
    'name (the reference page\'s example): its message to the character');

# ------------------------------------------------------------ unknown keys

bad('{"brandVoice":"warm"}', field(brandVoice => $BRAND), 'brandVoice: inherited');
bad('{"language":"en"}', field(language => $LANG), 'language: inherited');
bad('{"foo":1}', field(foo => $UNK), 'an unknown key');
bad('{"Gender":"male"}', field(Gender => $UNK), 'keys are case-sensitive');
bad('{"id":"inf_00000000000000000000000000000000"}', field(id => $UNK),
    'a client-supplied id is an unknown key');
bad('{"influencerId":"inf_00000000000000000000000000000000"}',
    field(influencerId => $UNK), 'a client-supplied influencerId');
bad('{"n\u0061me":"Ava"}', field(name => $NAME),
    '"n\u0061me" is name after unescaping');
bad('{"foo":{"a":{"b":[1,{"c":2}]}}}', field(foo => $UNK),
    'an unknown key with a nested value: only "Unrecognized key."');
bad('{"":1}', field('' => $UNK), 'an empty key');

# ------------------------------------------------------------ duplicates

bad('{"gender":"male","gender":"male"}', field(gender => $DUP), 'gender twice');
bad('{"gender":"male","gend\u0065r":"female"}', field(gender => $DUP),
    'gender and "gend\u0065r": duplicate after unescaping');
bad('{"prompt":"a","ageRange":"teen","prompt":"a"}', field(prompt => $DUP),
    'prompt twice, apart');
bad('{"ageRange":"teen","ageRange":"adult"}', field(ageRange => $DUP),
    'ageRange twice with different values');

# ------------------------------------------------------------ types

my %types = (null => 'null', 1 => 'number', '1.5' => 'number', '-0' => 'number',
             '1e3' => 'number', true => 'boolean', false => 'boolean',
             '[]' => 'array', '["male"]' => 'array', '{}' => 'object',
             '{"a":"male"}' => 'object');
for my $f (qw(gender ageRange prompt)) {
    for my $v (sort keys %types) {
        bad(qq({"$f":$v}), field($f => type_msg($types{$v})),
            "$f: $v is a $types{$v}");
    }
}

# ------------------------------------------------------------ numbers of any size

# RFC 8259 puts no bound on numbers: one that jansson cannot hold is still
# valid JSON, and a number, reported like any other
my @big = ('1e999', '-1e999', '1E+999', '1e-999', '1.7976931348623159e308',
           '123456789012345678901234567890', '-123456789012345678901234567890',
           '9223372036854775808');
for my $f (qw(gender ageRange prompt)) {
    for my $v (@big) {
        bad(qq({"$f":$v}), field($f => type_msg('number')),
            "valid JSON with a number of any size: $f: $v is a number");
    }
}
bad('{"foo":1e999}', field(foo => $UNK),
    'valid JSON with a number of any size: under an unknown key');
bad('{"foo":{"a":[1e999,-123456789012345678901234567890]}}', field(foo => $UNK),
    'valid JSON with a number of any size: nested under an unknown key');
bad('{"prompt":[1e999]}', field(prompt => type_msg('array')),
    'valid JSON with a number of any size: in an array as prompt');
bad('1e999', form(top_msg('number')),
    'valid JSON with a number of any size: 1e999 alone');
bad(' -123456789012345678901234567890 ', form(top_msg('number')),
    'valid JSON with a number of any size: a huge integer alone');
bad('[1e999]', form(top_msg('array')),
    'valid JSON with a number of any size: in a top-level array');
bad('{"name":"Ava","prompt":1e999,"gender":"robot",'
    . '"ageRange":123456789012345678901234567890,"brandVoice":-1e999}',
    { fieldErrors => { name => [$NAME], prompt => [type_msg('number')],
                       gender => [$GENUM], ageRange => [type_msg('number')],
                       brandVoice => [$BRAND] } },
    'valid JSON with a number of any size: every other problem reported');
bad('{"prompt":1e999,"prompt":"x"}', field(prompt => $DUP),
    'valid JSON with a number of any size: a duplicate key still found');
bad('{"prompt":1e999', form('Invalid JSON.'),
    'a huge number does not make a broken body valid: unterminated');
bad('{"prompt":1e999x}', form('Invalid JSON.'),
    'a huge number does not make a broken body valid: a letter after it');
bad('{"prompt":1e999 2}', form('Invalid JSON.'),
    'a huge number does not make a broken body valid: two numbers');
bad(qq({"prompt":1e999,"x":"\xff"}), form('Invalid UTF-8.'),
    'a huge number before invalid UTF-8: Invalid UTF-8.');

# ------------------------------------------------------------ enums

for my $v ('robot', 'Male', 'FEMALE', 'non-binary', 'nonbinary', '', ' male',
           'any', 'unknown')
{
    bad(qq({"gender":"$v"}), field(gender => $GENUM), "gender '$v': enum");
}
for my $v ('old', 'YOUNG_ADULT', 'young adult', '', 'child', 'adult ')
{
    bad(qq({"ageRange":"$v"}), field(ageRange => $AGENUM), "ageRange '$v': enum");
}

# ------------------------------------------------------------ prompt length

bad('{"prompt":""}', field(prompt => $MIN), 'an empty prompt');
bad('{"prompt":"' . ('p' x 61) . '"}', field(prompt => $MAX), 'a prompt of 61 characters');
bad('{"prompt":"' . ("\xc3\xa9" x 61) . '"}', field(prompt => $MAX),
    'a prompt of 61 two-byte characters');
bad('{"prompt":"' . ("\xf0\x9f\x98\x80" x 61) . '"}', field(prompt => $MAX),
    'a prompt of 61 emoji');
bad('{"prompt":"' . ('\ud83d\ude00' x 61) . '"}', field(prompt => $MAX),
    'a prompt of 61 escaped surrogate pairs');
bad('{"prompt":"' . ('x' x 200) . '"}', field(prompt => $MAX), 'a prompt of 200 characters');

# ------------------------------------------------------------ all problems at once

bad('{"name":"Ava","gender":"robot","prompt":"' . ('z' x 61) . '"}',
    { fieldErrors => { name => [$NAME], gender => [$GENUM], prompt => [$MAX] } },
    'name + bad gender + long prompt: all three reported');
bad('{"brandVoice":"x","language":"fr","ageRange":1,"foo":null,"gender":null}',
    { fieldErrors => { brandVoice => [$BRAND], language => [$LANG],
                       ageRange => [type_msg('number')], foo => [$UNK],
                       gender => [type_msg('null')] } },
    'five problems: all five reported');
bad('{"prompt":"","ageRange":"x","gender":"x","name":1}',
    { fieldErrors => { prompt => [$MIN], ageRange => [$AGENUM], gender => [$GENUM],
                       name => [$NAME] } },
    'empty prompt + two enums + name');

# ------------------------------------------------------------ formErrors

for my $b ('{', '{"gender":"male"', '{}x', '{}{}', '{"gender":"male",}',
           "{'gender':'male'}", '{"gender":male}', '{gender:"male"}',
           qq({"prompt":"a\x01b"}), qq({"prompt":"a\nb"}), '{"prompt":"\q"}',
           '{"prompt":"abc}', 'nul', ',', '{"a" 1}', "\x00{}")
{
    (my $name = $b) =~ s/([\x00-\x1f])/sprintf('\\x%02x', ord $1)/ge;
    bad($b, form('Invalid JSON.'), "invalid JSON: $name");
}

bad('[]', form(top_msg('array')), 'top level array');
bad('[{"gender":"male"}]', form(top_msg('array')), 'top level array of an object');
bad('"x"', form(top_msg('string')), 'top level string');
bad('1', form(top_msg('number')), 'top level number');
bad('true', form(top_msg('boolean')), 'top level true');
bad('false', form(top_msg('boolean')), 'top level false');
bad('null', form(top_msg('null')), 'top level null');

bad(qq({"prompt":"\xff"}), form('Invalid UTF-8.'), 'invalid UTF-8: 0xFF');
bad(qq({"prompt":"\xc0\xaf"}), form('Invalid UTF-8.'), 'invalid UTF-8: overlong');
bad(qq({"prompt":"\xe2\x82"}), form('Invalid UTF-8.'), 'invalid UTF-8: truncated');
bad(qq({"prompt":"\xed\xa0\x80"}), form('Invalid UTF-8.'),
    'invalid UTF-8: an encoded surrogate');
bad(qq({"\xff":1}), form('Invalid UTF-8.'), 'invalid UTF-8 in a key');
bad(qq({"prompt":"\xf4\x90\x80\x80"}), form('Invalid UTF-8.'),
    'invalid UTF-8: beyond U+10FFFF');

bad("\xef\xbb\xbf{}", form('Byte-order mark is not allowed.'), 'a byte-order mark');
bad("\xef\xbb\xbf{\"gender\":\"male\"}", form('Byte-order mark is not allowed.'),
    'a byte-order mark before a valid object');

bad('{"prompt":"\ud800"}', form('Invalid Unicode escape.'), 'a lone high surrogate');
bad('{"prompt":"x\udc00"}', form('Invalid Unicode escape.'), 'a lone low surrogate');
bad('{"prompt":"\ud800\u0041"}', form('Invalid Unicode escape.'),
    'a high surrogate followed by a non-surrogate');
bad('{"\ud800":1}', form('Invalid Unicode escape.'), 'a lone surrogate in a key');

# the depth limit is not specified; 3000 levels is too deep for any
bad('{"foo":' . ('[' x 3000), form('Nesting too deep.'),
    'nesting 3000 levels deep, unclosed (fits in 4k)');
check_validation($t->create(body => '{"foo":' . ('[' x 3000) . (']' x 3000) . '}',
                            port => $t->port('big')),
    $INVALID, form('Nesting too deep.'),
    'nesting 3000 levels deep, well-formed (body limit 8k)');

# ------------------------------------------------------------ valid bodies

good('', \%D, 'an empty body');
my $e = good('{}', \%D, '{}');
good(" \n {\t} \r\n", \%D, '{} with whitespace around and inside');

for my $g (qw(male female non_binary)) {
    good(qq({"gender":"$g"}), { %D, gender => $g }, "gender $g");
}
for my $a (qw(teen young_adult adult mid_adult mature senior)) {
    good(qq({"ageRange":"$a"}), { %D, ageRange => $a }, "ageRange $a");
}
good('{"gend\u0065r":"male"}', { %D, gender => 'male' },
     '"gend\u0065r" is gender');
good('{"prompt":"barista energy","ageRange":"mature","gender":"non_binary"}',
     { gender => 'non_binary', ageRange => 'mature', prompt => 'barista energy' },
     'all three fields, in another order');
good(qq({\n  "gender" : "male" ,\n  "prompt":"x"\n}\n),
     { %D, gender => 'male', prompt => 'x' }, 'pretty-printed');

# prompts: code points, not bytes; forwarded exactly, not trimmed
good('{"prompt":"' . ('p' x 60) . '"}', { %D, prompt => 'p' x 60 },
     'a prompt of 60 ASCII characters');
good('{"prompt":"' . ("\xc3\xa9" x 60) . '"}', { %D, prompt => "\x{e9}" x 60 },
     'a prompt of 60 two-byte characters');
good('{"prompt":"' . ("\xe2\x82\xac" x 60) . '"}', { %D, prompt => "\x{20ac}" x 60 },
     'a prompt of 60 three-byte characters');
good('{"prompt":"' . ("\xf0\x9f\x98\x80" x 60) . '"}',
     { %D, prompt => "\x{1f600}" x 60 }, 'a prompt of 60 emoji');
good('{"prompt":"' . ('\ud83d\ude00' x 60) . '"}',
     { %D, prompt => "\x{1f600}" x 60 }, 'a prompt of 60 escaped surrogate pairs');
good('{"prompt":"' . ('\u00e9' x 60) . '"}', { %D, prompt => "\x{e9}" x 60 },
     'a prompt of 60 \u escapes');
good('{"prompt":"e\u0301"}', { %D, prompt => "e\x{301}" },
     'a prompt with a combining mark');
good('{"prompt":" "}', { %D, prompt => ' ' }, 'a prompt of one space (not trimmed)');
good('{"prompt":"  soft librarian energy  "}',
     { %D, prompt => '  soft librarian energy  ' }, 'a prompt with spaces around');
good('{"prompt":"say \"hi\" \\\\ \/ \n\t"}',
     { %D, prompt => "say \"hi\" \\ / \n\t" }, 'a prompt with escapes');
good('{"prompt":"70s rocker vibe \u2014 \u00c9t\u00e9"}',
     { %D, prompt => "70s rocker vibe \x{2014} \x{c9}t\x{e9}" },
     'a prompt with \u escapes of non-ASCII');
good(qq({"prompt":"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"}),
     { %D, prompt => "\x{65e5}\x{672c}\x{8a9e} \x{43f}\x{440}\x{438}\x{432}\x{435}\x{442}" },
     'a prompt in Japanese and Russian');

is(scalar(my @b = $t->backend_requests), $jobs,
   'one forward per accepted request, none for rejected ones');

$t->check_log_clean;

done_testing;
