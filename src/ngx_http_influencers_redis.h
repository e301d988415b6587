
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


#define NGX_HTTP_INFLUENCERS_TOKEN_LEN  16


/* what Redis said of a claim or a finish */

typedef enum {
    NGX_HTTP_INFLUENCERS_REDIS_NEW = 0,   /* claimed: the token is ours */
    NGX_HTTP_INFLUENCERS_REDIS_BUSY,      /* in flight, same fingerprint */
    NGX_HTTP_INFLUENCERS_REDIS_MISMATCH,  /* another fingerprint */
    NGX_HTTP_INFLUENCERS_REDIS_DONE,      /* accepted: op->entry holds it */
    NGX_HTTP_INFLUENCERS_REDIS_FINISHED,  /* a finish or release applied */
    NGX_HTTP_INFLUENCERS_REDIS_STALE,     /* a finish refused: the key is
                                             another claim's or job's */
    NGX_HTTP_INFLUENCERS_REDIS_FAILED,    /* unreachable, too slow, refused
                                             (AUTH, an error reply), or a
                                             value that fails the checks */
    NGX_HTTP_INFLUENCERS_REDIS_RESEND,    /* claimed, but the key's job is
                                             in doubt: op->entry holds it,
                                             to be sent again */
    NGX_HTTP_INFLUENCERS_REDIS_LOST       /* the client's own: sent, and
                                             the reply lost (an op sees
                                             FAILED) */
} ngx_http_influencers_redis_rc_e;


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

    /* out */
    ngx_http_influencers_redis_rc_e  rc;
    ngx_http_influencers_entry_t   entry;        /* rc DONE, RESEND */

    /* the client's own */
    void                          *pending;
};


char *ngx_http_influencers_redis_conf(ngx_conf_t *cf,
    ngx_http_influencers_zone_t *zone);
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
