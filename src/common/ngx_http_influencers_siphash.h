
/*
 * Copyright (C) The influencers module authors.
 *
 * SipHash-2-4 (Aumasson and Bernstein), a keyed 64-bit hash: without the
 * key, nobody can make two inputs collide.  The zone keys it to recognise
 * a retry's body byte for byte.  The message is a prefix whose length is
 * a multiple of 8 and the bytes after it, hashed as if one:
 *
 *     h = ngx_http_influencers_siphash(key, prefix, 32, body, len);
 *
 * It needs the C library only, so that the unit tests check it against
 * the reference vectors.
 */


#ifndef _NGX_HTTP_INFLUENCERS_SIPHASH_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_SIPHASH_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <string.h>


#define ngx_http_influencers_sip_rotl(x, b)                                   \
    (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

#define ngx_http_influencers_sip_round(v0, v1, v2, v3)                        \
    v0 += v1; v1 = ngx_http_influencers_sip_rotl(v1, 13); v1 ^= v0;          \
    v0 = ngx_http_influencers_sip_rotl(v0, 32);                               \
    v2 += v3; v3 = ngx_http_influencers_sip_rotl(v3, 16); v3 ^= v2;          \
    v0 += v3; v3 = ngx_http_influencers_sip_rotl(v3, 21); v3 ^= v0;          \
    v2 += v1; v1 = ngx_http_influencers_sip_rotl(v1, 17); v1 ^= v2;          \
    v2 = ngx_http_influencers_sip_rotl(v2, 32)


static inline uint64_t
ngx_http_influencers_siphash_le64(const unsigned char *p)
{
    return (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16
           | (uint64_t) p[3] << 24 | (uint64_t) p[4] << 32
           | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48
           | (uint64_t) p[7] << 56;
}


static inline uint64_t
ngx_http_influencers_siphash(const unsigned char *key,
    const unsigned char *prefix, size_t plen, const unsigned char *in,
    size_t len)
{
    size_t          i, left;
    uint64_t        k0, k1, m, v0, v1, v2, v3, b;
    unsigned char   tail[8];

    k0 = ngx_http_influencers_siphash_le64(key);
    k1 = ngx_http_influencers_siphash_le64(key + 8);

    v0 = k0 ^ 0x736f6d6570736575ULL;
    v1 = k1 ^ 0x646f72616e646f6dULL;
    v2 = k0 ^ 0x6c7967656e657261ULL;
    v3 = k1 ^ 0x7465646279746573ULL;

    b = (uint64_t) (plen + len) << 56;

    for (i = 0; i + 8 <= plen; i += 8) {
        m = ngx_http_influencers_siphash_le64(prefix + i);
        v3 ^= m;
        ngx_http_influencers_sip_round(v0, v1, v2, v3);
        ngx_http_influencers_sip_round(v0, v1, v2, v3);
        v0 ^= m;
    }

    for (i = 0; i + 8 <= len; i += 8) {
        m = ngx_http_influencers_siphash_le64(in + i);
        v3 ^= m;
        ngx_http_influencers_sip_round(v0, v1, v2, v3);
        ngx_http_influencers_sip_round(v0, v1, v2, v3);
        v0 ^= m;
    }

    left = len - i;
    memset(tail, 0, sizeof(tail));

    if (left) {
        memcpy(tail, in + i, left);
    }

    b |= ngx_http_influencers_siphash_le64(tail);

    v3 ^= b;
    ngx_http_influencers_sip_round(v0, v1, v2, v3);
    ngx_http_influencers_sip_round(v0, v1, v2, v3);
    v0 ^= b;

    v2 ^= 0xff;
    ngx_http_influencers_sip_round(v0, v1, v2, v3);
    ngx_http_influencers_sip_round(v0, v1, v2, v3);
    ngx_http_influencers_sip_round(v0, v1, v2, v3);
    ngx_http_influencers_sip_round(v0, v1, v2, v3);

    return v0 ^ v1 ^ v2 ^ v3;
}


#endif /* _NGX_HTTP_INFLUENCERS_SIPHASH_H_INCLUDED_ */
