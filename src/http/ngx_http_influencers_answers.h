
/*
 * Copyright (C) The influencers module authors.
 *
 * Every answer the module can give, its status, code and message: the
 * table the senders (reply) write from and the counters (metrics) name.
 */


#ifndef _NGX_HTTP_INFLUENCERS_ANSWERS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_ANSWERS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef enum {
    NGX_HTTP_INFLUENCERS_ACCEPTED = 0,
    NGX_HTTP_INFLUENCERS_BAD_REQUEST,
    NGX_HTTP_INFLUENCERS_UNAUTHENTICATED,
    NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE,
    NGX_HTTP_INFLUENCERS_NOT_FOUND,
    NGX_HTTP_INFLUENCERS_METHOD_NOT_ALLOWED,
    NGX_HTTP_INFLUENCERS_REQUEST_TIMEOUT,
    NGX_HTTP_INFLUENCERS_IN_PROGRESS,
    NGX_HTTP_INFLUENCERS_TOO_LARGE,
    NGX_HTTP_INFLUENCERS_URI_TOO_LONG,
    NGX_HTTP_INFLUENCERS_MEDIA_TYPE,
    NGX_HTTP_INFLUENCERS_INVALID_BODY,
    NGX_HTTP_INFLUENCERS_INVALID_PATH,
    NGX_HTTP_INFLUENCERS_INVALID_IDEM,
    NGX_HTTP_INFLUENCERS_KEY_REUSED,
    NGX_HTTP_INFLUENCERS_HEADER_TOO_LARGE,
    NGX_HTTP_INFLUENCERS_INTERNAL,
    NGX_HTTP_INFLUENCERS_NOT_IMPLEMENTED,
    NGX_HTTP_INFLUENCERS_UPSTREAM_ERROR,
    NGX_HTTP_INFLUENCERS_CAPACITY,
    NGX_HTTP_INFLUENCERS_UPSTREAM_TIMEOUT,
    NGX_HTTP_INFLUENCERS_UNAVAILABLE,
    NGX_HTTP_INFLUENCERS_NO_ROUTE,
    NGX_HTTP_INFLUENCERS_TOO_MANY_REQUESTS,
    NGX_HTTP_INFLUENCERS_VERSION_NOT_SUPPORTED
} ngx_http_influencers_answer_e;


/* nginx 1.22 has no constant (and no reason phrase) for 422 */
#define NGX_HTTP_INFLUENCERS_UNPROCESSABLE  422


typedef struct {
    ngx_uint_t   status;
    ngx_str_t    code;
    ngx_str_t    message;
} ngx_http_influencers_answer_t;


const ngx_http_influencers_answer_t *ngx_http_influencers_answers_get(
    ngx_uint_t answer);
const char *ngx_http_influencers_answers_name(ngx_uint_t answer);
ngx_uint_t ngx_http_influencers_answers_status(ngx_uint_t answer);
/* how many answers there are: every one is counted */
ngx_uint_t ngx_http_influencers_answers_count(void);


#endif /* _NGX_HTTP_INFLUENCERS_ANSWERS_H_INCLUDED_ */
