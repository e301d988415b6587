#!/usr/bin/perl

# Helper of t/bench/lockhold.sh: writes a state file full of unexpired
# idempotency entries, in either layout, so that nginx starts with a full
# zone without a request being made.
#
#   perl t/bench/lockhold.pl --format v2|v3 --count N --out FILE
#        [--org org_bench] [--orgs 1] [--expiring 0.01] [--from 5] [--span 120]
#
# --expiring of the entries (a fraction) expire at random times from
# --from to --from + --span seconds after now, in no order, scattered over
# the file (so over the zone's queue); the others expire in 2 to 3 hours.
# --orgs N > 1 (v3 only): the entries are held by N synthetic orgs (org
# hashes that no name produces) instead of the org named by --org.
# Prints the number of entries written, and how many expire early.
#
# v2 (up to the org share): a header {uint32 magic "INFS", version 2,
#    payload 440, count, crc32 of all the payloads, reserved}, then count
#    payloads: the zone's record from "key" on (x86_64 layout, checked
#    against the struct with offsetof).
# v3: a header {uint32 magic "INFS", version 3, record size 128, count},
#    then 128-byte records {uint32 magic "INFJ", crc32 of the entry, entry
#    {key[32], fingerprint[32], job_id[16], influencer_id[16], uint64
#    expires_ms, uint64 org_hash, uint32 retry_after, uint32 reserved}}.
# Little-endian; the CRC is the standard CRC-32 (nginx's ngx_crc32_*).

use strict;
use warnings;
use Getopt::Long ();
use Compress::Raw::Zlib ();
use Math::BigInt ();
use Time::HiRes ();

my %o = (org => 'org_bench', orgs => 1, expiring => 0.01, from => 5,
         span => 120);
Getopt::Long::GetOptions(\%o, 'format=s', 'count=i', 'out=s', 'org=s', 'orgs=i',
                         'expiring=f', 'from=f', 'span=f', 'seed=i')
    or die "usage: $0 --format v2|v3 --count N --out FILE\n";
die "usage: $0 --format v2|v3 --count N --out FILE\n"
    unless $o{format} && $o{format} =~ /^v[23]$/ && $o{count} && $o{out};
die "--org: 1 to 64 bytes\n" unless length $o{org} >= 1 && length $o{org} <= 64;
die "--orgs: at least 1\n" unless $o{orgs} >= 1;
srand($o{seed}) if defined $o{seed};

# FNV-1a of the org name, 64 bits (the zone's org_hash), once
sub fnv1a {
    my ($s) = @_;
    my $h = Math::BigInt->from_hex('cbf29ce484222325');
    my $p = Math::BigInt->from_hex('100000001b3');
    my $m = Math::BigInt->new(2)->bpow(64);
    for my $c (unpack 'C*', $s) {
        $h->bxor($c)->bmul($p)->bmod($m);
    }
    return pack('VV', ($h->copy->band(0xffffffff))->numify,
                      ($h->copy->brsft(32))->numify);
}

my $now_ms   = int(Time::HiRes::time() * 1000);
my $org_hash = fnv1a($o{org});
my $fp       = pack('H64', 'f' x 64);
my $salt     = pack('VV', int(rand(2**32)), int(rand(2**32)));
my $v3       = $o{format} eq 'v3';

open my $fh, '>:raw', $o{out} or die "cannot write $o{out}: $!\n";

my $header_len = $v3 ? 16 : 24;
print {$fh} "\0" x $header_len;

my ($crc, $buf, $early) = (0, '', 0);

for my $i (1 .. $o{count}) {
    my $expires;
    if (rand() < $o{expiring}) {
        $expires = $now_ms + int(($o{from} + rand($o{span})) * 1000);
        $early++;
    } else {
        $expires = $now_ms + int((7200 + rand(3600)) * 1000);
    }

    # unique keys, spread over the tree: random-looking first bytes
    my $r = int(rand(2**32));
    my $key = pack('VV', $r, $i) . $salt . pack('V', $i) . ("\0" x 12);
    my $job = pack('nNV', 0x0191, $i, $r) . ("\0" x 6);
    my $inf = pack('VV', $i, $r) . ("\0" x 8);

    if ($v3) {
        my $entry = pack('a32 a32 a16 a16 Q< a8 V V',
                         $key, $fp, $job, $inf, $expires,
                         $o{orgs} > 1 ? pack('VV', $i % $o{orgs}, 0x9e3779b9)
                                      : $org_hash,
                         5, 0);
        $buf .= pack('VV', 0x4a464e49, Compress::Raw::Zlib::crc32($entry))
              . $entry;
    } else {
        # key fingerprint job_id influencer_id project deadline expires
        # retry_after state keyed gender age_range org_len prompt_len org
        # prompt
        my $p = pack('a32 a32 a16 a16 a16 Q< Q< v C C C C C C a64 a240',
                     $key, $fp, $job, $inf, "\x11" x 16, 0, $expires,
                     5, 2, 1, 1, 1, length $o{org}, 0, $o{org}, '');
        $buf .= $p;
    }

    if (length $buf >= 4 * 1024 * 1024 || $i == $o{count}) {
        $crc = Compress::Raw::Zlib::crc32($buf, $crc) unless $v3;
        print {$fh} $buf or die "write $o{out}: $!\n";
        $buf = '';
    }
}

seek($fh, 0, 0) or die "seek: $!\n";
if ($v3) {
    print {$fh} pack('V4', 0x53464e49, 3, 128, $o{count});
} else {
    print {$fh} pack('V6', 0x53464e49, 2, 440, $o{count}, $crc, 0);
}
close $fh or die "close $o{out}: $!\n";

print "$o{count} $early\n";
