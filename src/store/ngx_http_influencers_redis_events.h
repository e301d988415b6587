
/*
 * Copyright (C) The influencers module authors.
 *
 * hiredis's asynchronous API driven by nginx's event loop: the socket of a
 * redisAsyncContext wrapped in an ngx_connection_t.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REDIS_EVENTS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REDIS_EVENTS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


/*
 * Called once, when hiredis frees the context, whatever the reason (an
 * error it found, or redisAsyncFree()): after every pending command's
 * callback has had its NULL reply, before the socket is closed.  ac is
 * still readable (ac->err, ac->errstr) but must not be used otherwise.
 */
typedef void (*ngx_http_influencers_redis_gone_pt)(redisAsyncContext *ac,
    void *data);


/* in the caller's memory, which must outlive the context */

typedef struct {
    redisAsyncContext                   *ac;          /* NULL: none */
    ngx_connection_t                    *connection;
    ngx_http_influencers_redis_gone_pt   gone;
    void                                *data;
    unsigned                             writing:1;
} ngx_http_influencers_redis_events_t;


ngx_int_t ngx_http_influencers_redis_events_attach(
    ngx_http_influencers_redis_events_t *re, redisAsyncContext *ac,
    ngx_log_t *log);


#endif /* _NGX_HTTP_INFLUENCERS_REDIS_EVENTS_H_INCLUDED_ */
