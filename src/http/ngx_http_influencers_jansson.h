
/*
 * Copyright (C) The influencers module authors.
 *
 * jansson in nginx: its allocation functions, and a request body's parse
 * with them drawing from the request's pool.
 */


#ifndef _NGX_HTTP_INFLUENCERS_JANSSON_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_JANSSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_influencers_validate.h"


/* once, before the directory file is read with jansson */
void ngx_http_influencers_jansson_init(void);

/*
 * ngx_http_influencers_validate_body_check(), its dozen allocations pool
 * bumps from pool, its frees nothing; jansson's allocations outside it
 * are malloc()ed and freed as ever.
 */
ngx_http_influencers_body_rc_e ngx_http_influencers_jansson_body_check(
    ngx_pool_t *pool, ngx_http_influencers_body_t *b, const u_char *body,
    size_t len);


#endif /* _NGX_HTTP_INFLUENCERS_JANSSON_H_INCLUDED_ */
