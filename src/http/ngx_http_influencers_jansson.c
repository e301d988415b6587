
/*
 * Copyright (C) The influencers module authors.
 *
 * jansson's allocations, and a body's parse with them from the request's
 * pool (ngx_http_influencers_json.h is the writer).
 *
 * jansson 2.14 takes its allocation functions process-wide only
 * (json_set_alloc_funcs()), never per call.  So the pool they allocate
 * from is named in one static, by one function, around one parse, and
 * nowhere else: a worker runs one parse at a time (no jansson call is
 * made from nginx's thread pools), and a call that comes while no pool is
 * named (the directory file, read at configuration) gets malloc().  Every
 * block says where it came from, so a stray free is safe either way.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include "ngx_http_influencers_jansson.h"


/*
 * Every block jansson gets starts with a header saying where it came
 * from, so that a block is freed the way it was allocated whatever pool
 * is named when jansson frees it: one from malloc() is freed, one from a
 * pool goes with the pool.  Sixteen bytes keep malloc()'s alignment.
 */

#define NGX_HTTP_INFLUENCERS_JSON_HEADER  16
#define NGX_HTTP_INFLUENCERS_JSON_MALLOC  0x6d616c6cUL
#define NGX_HTTP_INFLUENCERS_JSON_POOL    0x706f6f6cUL


static void *ngx_http_influencers_jansson_alloc(size_t size);
static void ngx_http_influencers_jansson_free(void *p);


static ngx_pool_t  *ngx_http_influencers_jansson_pool;


void
ngx_http_influencers_jansson_init(void)
{
    json_malloc_t  m;
    json_free_t    f;

    /* the functions are the process's: set once, before any allocation */

    json_get_alloc_funcs(&m, &f);

    if (m != ngx_http_influencers_jansson_alloc) {
        json_set_alloc_funcs(ngx_http_influencers_jansson_alloc,
                             ngx_http_influencers_jansson_free);
    }
}


/*
 * Everything jansson allocates for the body comes from the pool, and
 * every object is still released by
 * ngx_http_influencers_validate_body_free() (a no-op for pool blocks).
 */

ngx_http_influencers_body_rc_e
ngx_http_influencers_jansson_body_check(ngx_pool_t *pool,
    ngx_http_influencers_body_t *b, const u_char *body, size_t len)
{
    ngx_pool_t                      *last;
    ngx_http_influencers_body_rc_e   rc;

    last = ngx_http_influencers_jansson_pool;
    ngx_http_influencers_jansson_pool = pool;

    rc = ngx_http_influencers_validate_body_check(b, body, len);

    ngx_http_influencers_jansson_pool = last;

    return rc;
}


static void *
ngx_http_influencers_jansson_alloc(size_t size)
{
    u_char  *p;

    if (size > (size_t) -1 - NGX_HTTP_INFLUENCERS_JSON_HEADER) {
        return NULL;
    }

    if (ngx_http_influencers_jansson_pool) {
        p = ngx_palloc(ngx_http_influencers_jansson_pool,
                       size + NGX_HTTP_INFLUENCERS_JSON_HEADER);
        if (p == NULL) {
            return NULL;
        }

        *(uintptr_t *) p = NGX_HTTP_INFLUENCERS_JSON_POOL;

    } else {
        p = malloc(size + NGX_HTTP_INFLUENCERS_JSON_HEADER);
        if (p == NULL) {
            return NULL;
        }

        *(uintptr_t *) p = NGX_HTTP_INFLUENCERS_JSON_MALLOC;
    }

    return p + NGX_HTTP_INFLUENCERS_JSON_HEADER;
}


static void
ngx_http_influencers_jansson_free(void *p)
{
    u_char  *h;

    if (p == NULL) {
        return;
    }

    h = (u_char *) p - NGX_HTTP_INFLUENCERS_JSON_HEADER;

    /* a pool's block goes with the request's pool */

    if (*(uintptr_t *) h == NGX_HTTP_INFLUENCERS_JSON_MALLOC) {
        *(uintptr_t *) h = 0;
        free(h);
    }
}
