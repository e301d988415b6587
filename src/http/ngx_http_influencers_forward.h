
/*
 * Copyright (C) The influencers module authors.
 *
 * The forward: the job JSON, POSTed to the backend location by a
 * subrequest that carries only the headers the contract names.  How it
 * ended is its one outcome (ngx_http_influencers_forward_e, set here
 * alone), which the store, the metrics and the reply read.
 */


#ifndef _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_


#include "ngx_http_influencers.h"


ngx_int_t ngx_http_influencers_forward(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_str_t *backend);
ngx_int_t ngx_http_influencers_forward_init(ngx_conf_t *cf);

/* the answer a forward's outcome gets: an index of the answer table */
ngx_uint_t ngx_http_influencers_forward_answer(
    ngx_http_influencers_forward_e outcome);
/* "accepted", "failed" or "unknown", for the log */
const char *ngx_http_influencers_forward_verdict(
    ngx_http_influencers_forward_e outcome);


#endif /* _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_ */
