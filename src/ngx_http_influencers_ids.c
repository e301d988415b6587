
/*
 * Copyright (C) The influencers module authors.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#if (NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
#include <sys/random.h>
#endif

#include "ngx_http_influencers_ids.h"


#define NGX_HTTP_INFLUENCERS_RANDOM_POOL  4096

#if (NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
#define NGX_HTTP_INFLUENCERS_ENTROPY      "getrandom()"
#else
#define NGX_HTTP_INFLUENCERS_ENTROPY      "read(\"/dev/urandom\")"
#endif


static ssize_t ngx_http_influencers_entropy(u_char *buf, size_t n);
static const EVP_MD *ngx_http_influencers_sha256_md(void);


/*
 * One getrandom() call (or read of /dev/urandom) serves many requests.
 * The pool is per process and emptied in every new worker, so that
 * workers never share bytes that were drawn before a fork.
 */

static u_char       ngx_http_influencers_pool[NGX_HTTP_INFLUENCERS_RANDOM_POOL];
static size_t       ngx_http_influencers_pool_pos =
                        NGX_HTTP_INFLUENCERS_RANDOM_POOL;

#if !(NGX_HTTP_INFLUENCERS_HAVE_GETRANDOM)
static ngx_fd_t     ngx_http_influencers_urandom = NGX_INVALID_FILE;
#endif

#if (NGX_HTTP_INFLUENCERS_HAVE_EVP_MD_FETCH)
static EVP_MD      *ngx_http_influencers_md;
#endif
static EVP_MD_CTX  *ngx_http_influencers_md_ctx;

static const u_char  ngx_http_influencers_crockford[]
    = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";


void
ngx_http_influencers_ids_init_process(void)
{
    ngx_explicit_memzero(ngx_http_influencers_pool,
                         NGX_HTTP_INFLUENCERS_RANDOM_POOL);
    ngx_http_influencers_pool_pos = NGX_HTTP_INFLUENCERS_RANDOM_POOL;
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
ngx_http_influencers_refill(void)
{
    size_t   got;
    ssize_t  n;

    got = 0;

    while (got < NGX_HTTP_INFLUENCERS_RANDOM_POOL) {
        n = ngx_http_influencers_entropy(ngx_http_influencers_pool + got,
                                      NGX_HTTP_INFLUENCERS_RANDOM_POOL - got);

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

    ngx_http_influencers_pool_pos = 0;

    return NGX_OK;
}


/* the kernel's CSPRNG */

static ssize_t
ngx_http_influencers_entropy(u_char *buf, size_t n)
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
ngx_http_influencers_random(u_char *buf, size_t n)
{
    size_t  chunk;

    while (n) {
        if (ngx_http_influencers_pool_pos == NGX_HTTP_INFLUENCERS_RANDOM_POOL
            && ngx_http_influencers_refill() != NGX_OK)
        {
            return NGX_ERROR;
        }

        chunk = ngx_min(n, NGX_HTTP_INFLUENCERS_RANDOM_POOL
                           - ngx_http_influencers_pool_pos);

        buf = ngx_cpymem(buf,
                 ngx_http_influencers_pool + ngx_http_influencers_pool_pos,
                 chunk);

        /* a byte handed out is never handed out again */
        ngx_explicit_memzero(
            ngx_http_influencers_pool + ngx_http_influencers_pool_pos, chunk);

        ngx_http_influencers_pool_pos += chunk;
        n -= chunk;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_influencers_request_id(u_char *out)
{
    u_char  raw[16];

    if (ngx_http_influencers_random(raw, sizeof(raw)) != NGX_OK) {
        return NGX_ERROR;
    }

    out = ngx_cpymem(out, "req_", sizeof("req_") - 1);
    ngx_hex_dump(out, raw, sizeof(raw));

    return NGX_OK;
}


/* 128 bits as 26 base32 characters, two leading zero bits first */

void
ngx_http_influencers_ulid_encode(const u_char *ulid, u_char *out)
{
    uint32_t    acc;
    ngx_uint_t  i, bits;

    acc = 0;
    bits = 2;

    for (i = 0; i < 16; i++) {
        acc = (acc << 8) | ulid[i];
        bits += 8;

        while (bits >= 5) {
            bits -= 5;
            *out++ = ngx_http_influencers_crockford[(acc >> bits) & 0x1f];
        }
    }
}


uint64_t
ngx_http_influencers_ulid_time(const u_char *ulid)
{
    ngx_uint_t  i;
    uint64_t    ms;

    ms = 0;

    for (i = 0; i < 6; i++) {
        ms = (ms << 8) | ulid[i];
    }

    return ms;
}


/* 2026-11-28T09:56:07.123Z */

u_char *
ngx_http_influencers_iso_time(u_char *p, uint64_t ms)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03uDZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (uint32_t) (ms % 1000));
}


/*
 * One context is reused per process (a worker is single-threaded), and
 * with OpenSSL 3 the digest is fetched once: EVP_sha256() there costs an
 * implicit fetch, a lock and a lookup, on every EVP_DigestInit_ex().
 */

EVP_MD_CTX *
ngx_http_influencers_sha256_init(void)
{
    const EVP_MD  *md;

    md = ngx_http_influencers_sha256_md();
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
ngx_http_influencers_sha256_md(void)
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


ngx_int_t
ngx_http_influencers_sha256_final(EVP_MD_CTX *md, u_char *out)
{
    return (EVP_DigestFinal_ex(md, out, NULL) == 1) ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_influencers_sha256(const u_char *p, size_t len, u_char *out)
{
    EVP_MD_CTX  *md;

    md = ngx_http_influencers_sha256_init();
    if (md == NULL || EVP_DigestUpdate(md, p, len) != 1) {
        return NGX_ERROR;
    }

    return ngx_http_influencers_sha256_final(md, out);
}
