
/*
 * Copyright (C) The influencers module authors.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#if (NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
#include <sys/random.h>
#endif

#include <openssl/evp.h>

#include "ngx_http_influencers_ids.h"


#define NGX_HTTP_INFLUENCERS_RANDOM_BUF  4096

#if (NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
#define NGX_HTTP_INFLUENCERS_ENTROPY      "getrandom()"
#else
#define NGX_HTTP_INFLUENCERS_ENTROPY      "read(\"/dev/urandom\")"
#endif


static ssize_t ngx_http_influencers_ids_entropy(u_char *buf, size_t n);
static const EVP_MD *ngx_http_influencers_ids_sha256_md(void);
static EVP_MD_CTX *ngx_http_influencers_ids_sha256_init(void);


/*
 * One getrandom() call (or read of /dev/urandom) serves many requests.
 * The buffer is per process and emptied in every new worker, so that
 * workers never share bytes that were drawn before a fork.
 */

static u_char  ngx_http_influencers_ids_buf[NGX_HTTP_INFLUENCERS_RANDOM_BUF];
static size_t  ngx_http_influencers_ids_pos = NGX_HTTP_INFLUENCERS_RANDOM_BUF;

#if !(NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
static ngx_fd_t     ngx_http_influencers_urandom = NGX_INVALID_FILE;
#endif

#if (NGX_HTTP_INFLUENCERS_HAVE_EVP_MD_FETCH)
static EVP_MD      *ngx_http_influencers_md;
#endif
static EVP_MD_CTX  *ngx_http_influencers_md_ctx;

static const u_char  ngx_http_influencers_crockford[]
    = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* each byte's two lower-case hex digits, at twice its value */
static const u_char  ngx_http_influencers_hex_pairs[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";



void
ngx_http_influencers_ids_init_process(void)
{
    ngx_explicit_memzero(ngx_http_influencers_ids_buf,
                         NGX_HTTP_INFLUENCERS_RANDOM_BUF);
    ngx_http_influencers_ids_pos = NGX_HTTP_INFLUENCERS_RANDOM_BUF;
}


void
ngx_http_influencers_ids_exit_process(void)
{
    if (ngx_http_influencers_md_ctx) {
        EVP_MD_CTX_free(ngx_http_influencers_md_ctx);
        ngx_http_influencers_md_ctx = NULL;
    }

#if (NGX_HTTP_INFLUENCERS_HAVE_EVP_MD_FETCH)
    if (ngx_http_influencers_md) {
        EVP_MD_free(ngx_http_influencers_md);
        ngx_http_influencers_md = NULL;
    }
#endif

#if !(NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
    if (ngx_http_influencers_urandom != NGX_INVALID_FILE) {
        (void) close(ngx_http_influencers_urandom);
        ngx_http_influencers_urandom = NGX_INVALID_FILE;
    }
#endif
}


static ngx_int_t
ngx_http_influencers_ids_refill(void)
{
    size_t   got;
    ssize_t  n;

    got = 0;

    while (got < NGX_HTTP_INFLUENCERS_RANDOM_BUF) {
        n = ngx_http_influencers_ids_entropy(ngx_http_influencers_ids_buf + got,
                                      NGX_HTTP_INFLUENCERS_RANDOM_BUF - got);

        if (n <= 0) {
            if (n == -1 && ngx_errno == NGX_EINTR) {
                continue;
            }

            /* 0 would be the end of /dev/urandom: never, but not a loop */
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, n ? ngx_errno : 0,
                          "influencers: " NGX_HTTP_INFLUENCERS_ENTROPY
                          " failed");
            return NGX_ERROR;
        }

        got += n;
    }

    ngx_http_influencers_ids_pos = 0;

    return NGX_OK;
}


/* the kernel's CSPRNG */

static ssize_t
ngx_http_influencers_ids_entropy(u_char *buf, size_t n)
{
#if (NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)

    return getrandom(buf, n, 0);

#else

    /* opened once per process, on the first refill */

    if (ngx_http_influencers_urandom == NGX_INVALID_FILE) {
        ngx_http_influencers_urandom = open("/dev/urandom",
                                            O_RDONLY | O_CLOEXEC);
        if (ngx_http_influencers_urandom == NGX_INVALID_FILE) {
            return -1;
        }
    }

    return read(ngx_http_influencers_urandom, buf, n);

#endif
}


ngx_int_t
ngx_http_influencers_ids_random(u_char *buf, size_t n)
{
    u_char  *p;
    size_t   chunk;

    while (n) {
        if (ngx_http_influencers_ids_pos == NGX_HTTP_INFLUENCERS_RANDOM_BUF
            && ngx_http_influencers_ids_refill() != NGX_OK)
        {
            return NGX_ERROR;
        }

        chunk = ngx_min(n, NGX_HTTP_INFLUENCERS_RANDOM_BUF
                           - ngx_http_influencers_ids_pos);

        p = ngx_http_influencers_ids_buf + ngx_http_influencers_ids_pos;
        buf = ngx_cpymem(buf, p, chunk);

        /* a byte handed out is never handed out again */
        ngx_explicit_memzero(p, chunk);

        ngx_http_influencers_ids_pos += chunk;
        n -= chunk;
    }

    return NGX_OK;
}


/* raw, where given, keeps the id's 16 bytes: a job's record holds them */

ngx_int_t
ngx_http_influencers_ids_request_id(u_char *out, u_char *raw)
{
    u_char  bytes[NGX_HTTP_INFLUENCERS_ID_BYTES];

    if (raw == NULL) {
        raw = bytes;
    }

    if (ngx_http_influencers_ids_random(raw, NGX_HTTP_INFLUENCERS_ID_BYTES)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_influencers_ids_request_id_text(out, raw);

    return NGX_OK;
}


void
ngx_http_influencers_ids_request_id_text(u_char *out, const u_char *raw)
{
    out = ngx_cpymem(out, "req_", sizeof("req_") - 1);
    ngx_http_influencers_ids_hex(out, raw, NGX_HTTP_INFLUENCERS_ID_BYTES);
}


/*
 * What ngx_hex_dump() writes, two digits at a time: a request's ids are
 * written on every request, where ngx_hex_dump(), a digit at a time, took
 * 432 instructions for a replay's two (t/bench/callgrind.sh), and the
 * replay 259 more in all than with this.  ngx_hex_dump() writes the rest
 * (Redis's keys, the scripts' digests), off the request's own path.
 */

u_char *
ngx_http_influencers_ids_hex(u_char *dst, const u_char *src, size_t len)
{
    while (len--) {
        ngx_memcpy(dst, &ngx_http_influencers_hex_pairs[2 * *src++], 2);
        dst += 2;
    }

    return dst;
}


/*
 * 128 bits as 26 base32 characters, two leading zero bits first: the first
 * character holds three bits, the fourteenth the last bit of the first
 * half and four of the second, every other one five.
 */

void
ngx_http_influencers_ids_ulid_encode(const u_char *ulid, u_char *out)
{
    uint64_t    hi, lo;
    ngx_uint_t  i;

    hi = 0;
    lo = 0;

    for (i = 0; i < 8; i++) {
        hi = (hi << 8) | ulid[i];
        lo = (lo << 8) | ulid[i + 8];
    }

    out[0] = ngx_http_influencers_crockford[hi >> 61];

    for (i = 1; i < 13; i++) {
        out[i] = ngx_http_influencers_crockford[(hi >> (61 - 5 * i)) & 0x1f];
    }

    out[13] = ngx_http_influencers_crockford[((hi & 1) << 4) | (lo >> 60)];

    for (i = 1; i < 13; i++) {
        out[13 + i] = ngx_http_influencers_crockford[(lo >> (60 - 5 * i))
                                                     & 0x1f];
    }
}


uint64_t
ngx_http_influencers_ids_ulid_time(const u_char *ulid)
{
    ngx_uint_t  i;
    uint64_t    ms;

    ms = 0;

    for (i = 0; i < 6; i++) {
        ms = (ms << 8) | ulid[i];
    }

    return ms;
}


/*
 * Dates are written by hand: through ngx_sprintf() they were the larger
 * part of what formatting an answer cost.  Years of other than four
 * digits, which no clock of a running gateway gives, take the old way.
 */

static const char  ngx_http_influencers_week[][4] = {
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
};

static const char  ngx_http_influencers_months[][4] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};


#define ngx_http_influencers_two_digits(p, n)                                 \
    *(p)++ = (u_char) ('0' + (n) / 10); *(p)++ = (u_char) ('0' + (n) % 10)


/* 2026-11-28T09:56:07.123Z */

u_char *
ngx_http_influencers_ids_iso_time(u_char *p, uint64_t ms)
{
    ngx_uint_t  year, frac;
    ngx_tm_t    tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    year = tm.ngx_tm_year;
    frac = (ngx_uint_t) (ms % 1000);

    if (year < 1000 || year > 9999) {
        return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03uDZ",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                           (uint32_t) frac);
    }

    ngx_http_influencers_two_digits(p, year / 100);
    ngx_http_influencers_two_digits(p, year % 100);
    *p++ = '-';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_mon);
    *p++ = '-';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_mday);
    *p++ = 'T';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_hour);
    *p++ = ':';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_min);
    *p++ = ':';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_sec);
    *p++ = '.';
    *p++ = (u_char) ('0' + frac / 100);
    ngx_http_influencers_two_digits(p, frac % 100);
    *p++ = 'Z';

    return p;
}


/* Mon, 28 Sep 1970 06:00:00 GMT */

u_char *
ngx_http_influencers_ids_http_time(u_char *p, time_t t)
{
    ngx_uint_t  year;
    ngx_tm_t    tm;

    ngx_gmtime(t, &tm);

    year = tm.ngx_tm_year;

    if (year < 1000 || year > 9999) {
        return ngx_http_time(p, t);
    }

    p = ngx_cpymem(p, ngx_http_influencers_week[tm.ngx_tm_wday], 3);
    *p++ = ',';
    *p++ = ' ';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_mday);
    *p++ = ' ';
    p = ngx_cpymem(p, ngx_http_influencers_months[tm.ngx_tm_mon - 1], 3);
    *p++ = ' ';
    ngx_http_influencers_two_digits(p, year / 100);
    ngx_http_influencers_two_digits(p, year % 100);
    *p++ = ' ';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_hour);
    *p++ = ':';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_min);
    *p++ = ':';
    ngx_http_influencers_two_digits(p, (ngx_uint_t) tm.ngx_tm_sec);

    return ngx_cpymem(p, " GMT", 4);
}


u_char *
ngx_http_influencers_ids_decimal(u_char *p, uint64_t n)
{
    u_char   *q;
    u_char    digits[NGX_INT64_LEN];

    q = digits + NGX_INT64_LEN;

    do {
        *--q = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    return ngx_cpymem(p, q, digits + NGX_INT64_LEN - q);
}


/*
 * One context is reused per process (a worker is single-threaded), and
 * with OpenSSL 3 the digest is fetched once: EVP_sha256() there costs an
 * implicit fetch, a lock and a lookup, on every EVP_DigestInit_ex().
 */

static EVP_MD_CTX *
ngx_http_influencers_ids_sha256_init(void)
{
    const EVP_MD  *md;

    md = ngx_http_influencers_ids_sha256_md();
    if (md == NULL) {
        return NULL;
    }

    if (ngx_http_influencers_md_ctx == NULL) {
        ngx_http_influencers_md_ctx = EVP_MD_CTX_new();
        if (ngx_http_influencers_md_ctx == NULL) {
            return NULL;
        }
    }

    if (EVP_DigestInit_ex(ngx_http_influencers_md_ctx, md, NULL) != 1) {
        return NULL;
    }

    return ngx_http_influencers_md_ctx;
}


static const EVP_MD *
ngx_http_influencers_ids_sha256_md(void)
{
#if (NGX_HTTP_INFLUENCERS_HAVE_EVP_MD_FETCH)

    if (ngx_http_influencers_md == NULL) {
        ngx_http_influencers_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    }

    return ngx_http_influencers_md;

#else

    return EVP_sha256();

#endif
}


/*
 * In one call: the digests are of a few dozen bytes.  SHA256_Init() and
 * friends would cost a fifth less a digest (callgrind, one block: 2,281
 * instructions against 2,928), but OpenSSL 3 deprecates them, and builds
 * without deprecated functions lack them.
 */

ngx_int_t
ngx_http_influencers_ids_sha256(const u_char *p, size_t len, u_char *out)
{
    EVP_MD_CTX  *md;

    md = ngx_http_influencers_ids_sha256_init();

    if (md == NULL
        || EVP_DigestUpdate(md, p, len) != 1
        || EVP_DigestFinal_ex(md, out, NULL) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
