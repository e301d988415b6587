
/*
 * Copyright (C) The influencers module authors.
 *
 * Every answer the module sends: the 202 envelope, replays and the JSON
 * errors, including those for statuses nginx itself produces.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REPLY_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REPLY_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_answers.h"


/* whether a 202 is the job's first answer, or a replay of it */

typedef enum {
    NGX_HTTP_INFLUENCERS_FIRST_ANSWER = 0,
    NGX_HTTP_INFLUENCERS_REPLAYED
} ngx_http_influencers_replayed_e;


/* an error; a 409 or a 503 with a Retry-After of retry_after seconds */
ngx_int_t ngx_http_influencers_reply_send_error(ngx_http_request_t *r,
    u_char *request_id, ngx_uint_t answer, ngx_str_t *details);
ngx_int_t ngx_http_influencers_reply_send_busy(ngx_http_request_t *r,
    u_char *request_id, ngx_uint_t answer, time_t retry_after);
ngx_int_t ngx_http_influencers_reply_send_accepted(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_replayed_e replayed);
ngx_int_t ngx_http_influencers_reply_errors_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_influencers_reply_send_json(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);
ngx_int_t ngx_http_influencers_reply_send_body(ngx_http_request_t *r,
    ngx_str_t *type, size_t type_len, u_char *body, size_t len);


#endif /* _NGX_HTTP_INFLUENCERS_REPLY_H_INCLUDED_ */
