
/*
 * Copyright (C) The influencers module authors.
 *
 * The forward: the job JSON, POSTed to the backend location by a
 * subrequest that carries only the headers the contract names; and how
 * a forward ended, the one outcome the store, the metrics and the reply
 * read.
 */


#ifndef _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * How a forward ended.  What the store cares for is whether the job may
 * have reached the backend: a forward that failed before a byte was
 * sent, or that the backend answered with a status, failed for sure; one
 * cut short after the job was sent may have landed (in doubt).  The first
 * five are influencers_forwards_total's outcomes, in its order.
 */

typedef enum {
    NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED = 0,    /* a 2xx */
    NGX_HTTP_INFLUENCERS_FORWARD_FAILED,          /* for sure */
    NGX_HTTP_INFLUENCERS_FORWARD_NOT_FOUND,       /* the backend's 404 */
    NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT,         /* nginx's 504, nothing
                                                     sent: for sure */
    NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN,         /* sent, cut short: in
                                                     doubt */
    NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT,    /* nginx's 504 after the
                                                     job was sent: in doubt */
    NGX_HTTP_INFLUENCERS_FORWARD_NOT_STARTED      /* no subrequest: for
                                                     sure, never counted */
} ngx_http_influencers_forward_e;


/* the key keeps its job: the forward may have reached the backend */

static ngx_inline ngx_uint_t
ngx_http_influencers_forward_in_doubt(ngx_http_influencers_forward_e outcome)
{
    return outcome == NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN
           || outcome == NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT;
}


/* the job did not reach the backend, or the backend refused it */

static ngx_inline ngx_uint_t
ngx_http_influencers_forward_failed(ngx_http_influencers_forward_e outcome)
{
    return outcome != NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED
           && !ngx_http_influencers_forward_in_doubt(outcome);
}


struct ngx_http_influencers_ctx_s;

ngx_int_t ngx_http_influencers_forward(ngx_http_request_t *r,
    struct ngx_http_influencers_ctx_s *ctx, ngx_str_t *backend);
ngx_int_t ngx_http_influencers_forward_init(ngx_conf_t *cf);

/* the answer a forward's outcome gets: an index of the answer table */
ngx_uint_t ngx_http_influencers_forward_answer(
    ngx_http_influencers_forward_e outcome);
/* "accepted", "failed" or "unknown", for the log */
const char *ngx_http_influencers_forward_verdict(
    ngx_http_influencers_forward_e outcome);


#endif /* _NGX_HTTP_INFLUENCERS_FORWARD_H_INCLUDED_ */
