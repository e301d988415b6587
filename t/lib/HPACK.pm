package HPACK;

# What the tests' small HTTP/2 clients (t/18, t/51) share: HPACK decoding
# of nginx's answers (static table, Huffman-coded values, the dynamic
# table), the few encodings a request needs, and a frame.

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(huff_decode hpack_int hpack_str hpack_decode
                    hpack_int_enc hpack_literal h2_frame);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my @H2_STATIC = (undef, map { [split /=/, $_, 2] } qw(
    :authority= :method=GET :method=POST :path=/ :path=/index.html
    :scheme=http :scheme=https :status=200 :status=204 :status=206
    :status=304 :status=400 :status=404 :status=500 accept-charset=
    accept-encoding= accept-language= accept-ranges= accept=
    access-control-allow-origin= age= allow= authorization= cache-control=
    content-disposition= content-encoding= content-language=
    content-length= content-location= content-range= content-type= cookie=
    date= etag= expect= expires= from= host= if-match= if-modified-since=
    if-none-match= if-range= if-unmodified-since= last-modified= link=
    location= max-forwards= proxy-authenticate= proxy-authorization=
    range= referer= refresh= retry-after= server= set-cookie=
    strict-transport-security= transfer-encoding= user-agent= vary= via=
    www-authenticate=));
$H2_STATIC[16][1] = 'gzip, deflate';

# RFC 7541 appendix B, the codes of the printable characters (32-126):
# what nginx's answers are made of
my %HUFF;
{
    my @codes = qw(
        14/6 3f8/10 3f9/10 ffa/12 1ff9/13 15/6 f8/8 7fa/11 3fa/10 3fb/10
        f9/8 7fb/11 fa/8 16/6 17/6 18/6 0/5 1/5 2/5 19/6 1a/6 1b/6 1c/6
        1d/6 1e/6 1f/6 5c/7 fb/8 7ffc/15 20/6 ffb/12 3fc/10 1ffa/13 21/6
        5d/7 5e/7 5f/7 60/7 61/7 62/7 63/7 64/7 65/7 66/7 67/7 68/7 69/7
        6a/7 6b/7 6c/7 6d/7 6e/7 6f/7 70/7 71/7 72/7 fc/8 73/7 fd/8
        1ffb/13 7fff0/19 1ffc/13 3ffc/14 22/6 7ffd/15 3/5 23/6 4/5 24/6
        5/5 25/6 26/6 27/6 6/5 74/7 75/7 28/6 29/6 2a/6 7/5 2b/6 76/7
        2c/6 8/5 9/5 2d/6 77/7 78/7 79/7 7a/7 7b/7 7ffe/15 7fc/11 3ffd/14
        1ffd/13);
    for my $i (0 .. $#codes) {
        my ($code, $len) = split m{/}, $codes[$i];
        $HUFF{"$len:" . hex $code} = chr(32 + $i);
    }
}

sub huff_decode {
    my ($s) = @_;
    my ($out, $acc, $n) = ('', 0, 0);
    for my $bit (split //, unpack('B*', $s)) {
        $acc = ($acc << 1) | $bit;
        $n++;
        if (defined(my $c = $HUFF{"$n:$acc"})) {
            $out .= $c;
            ($acc, $n) = (0, 0);
        }
        return undef if $n > 30;
    }
    # the rest is padding: fewer than 8 bits, all ones
    return $n < 8 && $acc == (1 << $n) - 1 ? $out : undef;
}

sub hpack_int {
    my ($buf, $pos, $bits) = @_;
    my $max = (1 << $bits) - 1;
    my $v = ord(substr($$buf, $$pos++, 1)) & $max;
    return $v if $v < $max;
    for (my $m = 0; ; $m += 7) {
        my $b = ord(substr($$buf, $$pos++, 1));
        $v += ($b & 0x7f) << $m;
        return $v unless $b & 0x80;
    }
}

sub hpack_str {
    my ($buf, $pos) = @_;
    my $huff = ord(substr($$buf, $$pos, 1)) & 0x80;
    my $len = hpack_int($buf, $pos, 7);
    my $s = substr($$buf, $$pos, $len);
    $$pos += $len;
    return $huff ? huff_decode($s) : $s;
}

# a header block -> [name, value] pairs; $dyn is the dynamic table
sub hpack_decode {
    my ($block, $dyn) = @_;
    my ($pos, @h) = (0);
    my $entry = sub {
        my ($i) = @_;
        return $i < @H2_STATIC ? $H2_STATIC[$i] : $dyn->[$i - @H2_STATIC]
               || ['?', '?'];
    };
    while ($pos < length $block) {
        my $b = ord(substr($block, $pos, 1));
        if ($b & 0x80) {
            push @h, [@{ $entry->(hpack_int(\$block, \$pos, 7)) }];
            next;
        }
        if (($b & 0xe0) == 0x20) {
            hpack_int(\$block, \$pos, 5);    # a table size update
            next;
        }
        my $indexing = ($b & 0xc0) == 0x40;
        my $i = hpack_int(\$block, \$pos, $indexing ? 6 : 4);
        my $name = $i ? $entry->($i)->[0] : hpack_str(\$block, \$pos);
        my $value = hpack_str(\$block, \$pos);
        unshift @$dyn, [$name, $value] if $indexing;
        push @h, [$name, $value];
    }
    return @h;
}

sub hpack_int_enc {
    my ($v, $bits) = @_;
    my $max = (1 << $bits) - 1;
    return chr($v) if $v < $max;
    my $s = chr($max);
    for ($v -= $max; $v >= 128; $v >>= 7) {
        $s .= chr(($v & 0x7f) | 0x80);
    }
    return $s . chr($v);
}

# a literal header field without indexing, new name, no Huffman
sub hpack_literal {
    my ($n, $v) = @_;
    return "\x00" . hpack_int_enc(length $n, 7) . $n
                  . hpack_int_enc(length $v, 7) . $v;
}

sub h2_frame {
    my ($type, $flags, $sid, $payload) = @_;
    return substr(pack('N', length $payload), 1)
           . pack('CCN', $type, $flags, $sid) . $payload;
}

1;
