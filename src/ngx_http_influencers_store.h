
/*
 * Copyright (C) The influencers module authors.
 *
 * Idempotency as one interface: look up or claim, then finish or
 * release.  The zone alone on one gateway, or Redis for a fleet with the
 * zone as its cache: the handler reads the same either way.
 */


#ifndef _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"


typedef enum {
    NGX_HTTP_INFLUENCERS_STORE_NEW = 0,       /* claimed: forward it */
    NGX_HTTP_INFLUENCERS_STORE_REPLAY,        /* accepted: acc holds it */
    NGX_HTTP_INFLUENCERS_STORE_BUSY,          /* in flight */
    NGX_HTTP_INFLUENCERS_STORE_MISMATCH,      /* another request's key */
    NGX_HTTP_INFLUENCERS_STORE_FULL,          /* no room in the zone */
    NGX_HTTP_INFLUENCERS_STORE_OVER_SHARE,    /* the org holds its share */
    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE,   /* Redis cannot be reached */
    NGX_HTTP_INFLUENCERS_STORE_FINISHED,      /* the outcome is recorded */
    NGX_HTTP_INFLUENCERS_STORE_AGAIN,         /* the handler will tell */
    NGX_HTTP_INFLUENCERS_STORE_RESEND         /* claimed: the key's job in
                                                 doubt, acc holds it: send
                                                 it again */
} ngx_http_influencers_store_e;


typedef void (*ngx_http_influencers_store_pt)(ngx_http_request_t *r,
    ngx_http_influencers_store_e result);


ngx_http_influencers_store_e ngx_http_influencers_store_claim(
    ngx_http_request_t *r, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim, ngx_http_influencers_accept_t *acc,
    ngx_http_influencers_store_pt handler);
ngx_http_influencers_store_e ngx_http_influencers_store_finish(
    ngx_http_request_t *r, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc,
    ngx_http_influencers_outcome_e outcome,
    ngx_http_influencers_store_pt handler);
void ngx_http_influencers_store_cleanup(ngx_http_request_t *r);


#endif /* _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_ */
