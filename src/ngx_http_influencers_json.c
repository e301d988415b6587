
/*
 * Copyright (C) The influencers module authors.
 *
 * jansson's allocations (ngx_http_influencers_json.h is the writer).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include "ngx_http_influencers.h"


/*
 * Every block jansson gets starts with a header saying where it came
 * from, so that a block is freed the way it was allocated whatever pool
 * is named when jansson frees it: one from malloc() is freed, one from a
 * pool goes with the pool.  Sixteen bytes keep malloc()'s alignment.
 */

#define NGX_HTTP_INFLUENCERS_JSON_HEADER  16
#define NGX_HTTP_INFLUENCERS_JSON_MALLOC  0x6d616c6cUL
#define NGX_HTTP_INFLUENCERS_JSON_POOL    0x706f6f6cUL


static void *ngx_http_influencers_json_alloc(size_t size);
static void ngx_http_influencers_json_free(void *p);


static ngx_pool_t  *ngx_http_influencers_json_current;


void
ngx_http_influencers_json_init(void)
{
    json_malloc_t  m;
    json_free_t    f;

    /* the functions are the process's: set once, before any allocation */

    json_get_alloc_funcs(&m, &f);

    if (m != ngx_http_influencers_json_alloc) {
        json_set_alloc_funcs(ngx_http_influencers_json_alloc,
                             ngx_http_influencers_json_free);
    }
}


/* names the pool jansson allocates from (NULL: malloc), returns the last */

ngx_pool_t *
ngx_http_influencers_json_pool(ngx_pool_t *pool)
{
    ngx_pool_t  *last;

    last = ngx_http_influencers_json_current;
    ngx_http_influencers_json_current = pool;

    return last;
}


static void *
ngx_http_influencers_json_alloc(size_t size)
{
    u_char  *p;

    if (size > (size_t) -1 - NGX_HTTP_INFLUENCERS_JSON_HEADER) {
        return NULL;
    }

    if (ngx_http_influencers_json_current) {
        p = ngx_palloc(ngx_http_influencers_json_current,
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
ngx_http_influencers_json_free(void *p)
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
