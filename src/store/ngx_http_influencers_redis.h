
/*
 * Copyright (C) The influencers module authors.
 *
 * The fleet store: idempotency claims shared by every gateway node, in
 * Redis, reached through hiredis driven by nginx's own event loop.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REDIS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REDIS_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"


typedef struct ngx_http_influencers_redis_op_s  ngx_http_influencers_redis_op_t;

typedef void (*ngx_http_influencers_redis_handler_pt)(
    ngx_http_influencers_redis_op_t *op);


/*
 * One operation of one request, in the request's memory.  The handler is
 * called exactly once, from the event loop (never from inside the call
 * that started the operation), with op->rc set: on the reply, or at the
 * command timeout, whichever comes first; a reply that comes later is
 * dropped.  ngx_http_influencers_redis_cancel() detaches it, when the
 * request goes first: its handler is never called.
 */

struct ngx_http_influencers_redis_op_s {
    /* in */
    u_char                         key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    uint64_t                       org_hash;
    u_char                         fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                         token[NGX_HTTP_INFLUENCERS_TOKEN_LEN];
    ngx_http_influencers_entry_t   job;          /* a claim's new job */
    ngx_http_influencers_redis_handler_pt  handler;
    void                          *data;
    ngx_log_t                     *log;

    /*
     * out: NEW, RESEND, REPLAY, BUSY, MISMATCH of a claim, FINISHED or
     * STALE of a finish, UNAVAILABLE of either (unreachable, too slow,
     * refused: AUTH, an error reply, a value that fails the checks)
     */
    ngx_http_influencers_store_e   rc;
    ngx_http_influencers_entry_t   entry;        /* rc REPLAY, RESEND */

    /* the client's own */
    void                          *pending;
};


ngx_int_t ngx_http_influencers_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_influencers_zone_t *zone);
void ngx_http_influencers_redis_exit_process(
    ngx_http_influencers_zone_t *zone);

/*
 * NGX_OK: the handler will be called.  NGX_DECLINED: Redis cannot be
 * reached now (not connected, waiting to reconnect): failed at once, the
 * handler will not be called.  NGX_ERROR: no memory; nor will it.
 */
ngx_int_t ngx_http_influencers_redis_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_redis_op_t *op, ngx_msec_t lease);

/*
 * A finish, kept in the zone and sent now; op, where given, waits for the
 * answer as above.  Whatever happens, the zone's copy is dropped once
 * Redis has it, or sent again later by any worker.
 */
ngx_int_t ngx_http_influencers_redis_finish(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_redis_op_t *op,
    ngx_http_influencers_finish_t *fin);
void ngx_http_influencers_redis_cancel(ngx_http_influencers_redis_op_t *op);

/* the finish script's value of an accepted entry */
size_t ngx_http_influencers_redis_accepted(u_char *dst, u_char *fingerprint,
    ngx_http_influencers_entry_t *entry);


#endif /* _NGX_HTTP_INFLUENCERS_REDIS_H_INCLUDED_ */
