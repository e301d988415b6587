#!/usr/bin/perl

# CONTRACT 1 (body size), 2 (413 row), 7 (default limit 4 KiB; a declared
# body over client_max_body_size still gets JSON).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use InfTest qw(:all);

plan skip_all => 'module not built: ' . module_path() unless have_module();

my $t = InfTest->setup(server => 'client_max_body_size 8k;',
                       http => endpoint_server(port => 'SMALL',
                           top => 'client_max_body_size 2k;',
                           location => 'influencers_body_limit 1k;'));

# a valid body of exactly $n bytes
sub padded {
    my ($n) = @_;
    my $b = '{"prompt":"x"}';
    return $b . (' ' x ($n - length $b));
}

my $P = 'PAYLOAD_TOO_LARGE';

# ------------------------------------------------------------ Content-Length

check_accepted($t->create(body => padded(4096)),
               'a body of exactly 4096 bytes (the default limit): accepted');
check_error($t->create(body => padded(4097)), 413, $P, undef,
            'a body of 4097 bytes: 413');
check_error($t->create(body => padded(8000)), 413, $P, undef,
            'a body of 8000 bytes: 413');

# announced by Content-Length: answered before the body is sent
my $r = $t->create(body => '', headers => ['Content-Length' => 5000],
                   no_content_length => 1, timeout => 3);
check_error($r, 413, $P, undef,
            'Content-Length: 5000 without the body: 413 up front');
ok(!$r->timed_out, 'Content-Length over the limit: no wait for the body');

# size is checked before the content type
check_error($t->create(body => padded(5000), ctype => 'text/plain'), 413, $P,
            undef, 'a 5000-byte text/plain body: 413 (size before type)');
check_error($t->create(body => ('x' x 5000), ctype => undef), 413, $P, undef,
            'a 5000-byte body without Content-Type: 413 (size before type)');

# ------------------------------------------------------------ chunked

check_accepted($t->create(body => padded(4096), chunked => [1000, 1000, 2096]),
               'a chunked body of 4096 bytes: accepted');
check_accepted($t->create(body => '{"gender":"male"}', chunked => [3, 5, 100]),
               'a small chunked body: accepted');
check_error($t->create(body => padded(5000), chunked => [1000, 1000, 3000]), 413,
            $P, undef, 'a chunked body of 5000 bytes: 413 while reading');
check_error($t->create(body => padded(4097), chunked => [(100) x 41]), 413, $P,
            undef, 'a chunked body of 4097 bytes in small chunks: 413');
check_error($t->create(body => padded(4097), chunked => [4097]), 413, $P,
            undef, 'one chunk of 4097 bytes: 413');

# ------------------------------------------------------------ client_max_body_size

$r = $t->create(body => '', headers => ['Content-Length' => 9000],
                no_content_length => 1, timeout => 3);
check_error($r, 413, $P, undef,
            'Content-Length over client_max_body_size (nginx\'s own 413): JSON');

$r = $t->create(body => '', headers => ['Content-Length' => 2000000],
                no_content_length => 1, key => undef, timeout => 3);
check_error($r, 413, $P, undef,
            '2 MB declared, no key: nginx\'s 413 as JSON');

# ------------------------------------------------------------ configured limit

my $sp = $t->port('small');
check_accepted($t->create(port => $sp, body => padded(1024)),
               'influencers_body_limit 1k: 1024 bytes accepted');
check_error($t->create(port => $sp, body => padded(1025)), 413, $P, undef,
            'influencers_body_limit 1k: 1025 bytes: 413');
check_error($t->create(port => $sp, body => padded(1025), chunked => [500, 525]),
            413, $P, undef, 'influencers_body_limit 1k: chunked 1025 bytes: 413');
check_error($t->create(port => $sp, body => padded(3000)), 413, $P, undef,
            'client_max_body_size 2k: a declared 3000-byte body: 413 JSON');

my @jobs = $t->backend_requests;
is(scalar @jobs, 4, 'only the accepted requests were forwarded');

$t->check_log_clean;

done_testing;
