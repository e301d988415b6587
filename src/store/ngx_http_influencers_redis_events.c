
/*
 * Copyright (C) The influencers module authors.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_influencers_redis_events.h"


/*
 * hiredis tells its event library when it wants to read or write through
 * the ev hooks of the context, and is told back by redisAsyncHandleRead()
 * and redisAsyncHandleWrite().  Here the library is nginx: the socket is
 * an ngx_connection_t of the worker (it counts in worker_connections), its
 * events call hiredis, and the hooks add and delete them.
 *
 * The socket is watched level-triggered, even where nginx's own sockets
 * are edge-triggered (epoll, kqueue): hiredis reads at most 16k and writes
 * once per call, without saying whether it emptied the socket or its
 * buffer, so an edge-triggered event could leave replies unread until the
 * next one arrives.  Level-triggered, the event comes again while there is
 * something to read (or room to write what is left).
 *
 * Writes are not waited for while the connection is up: a command posts
 * the write event, so that the commands issued in one turn of the event
 * loop leave in one write(2), with no epoll_ctl() at all.  Only a write
 * that left something behind (the socket was full), and the connect, wait
 * for the socket.
 */


static void ngx_http_influencers_redis_events_read_handler(ngx_event_t *rev);
static void ngx_http_influencers_redis_events_write_handler(ngx_event_t *wev);
static void ngx_http_influencers_redis_events_add_read(void *data);
static void ngx_http_influencers_redis_events_del_read(void *data);
static void ngx_http_influencers_redis_events_add_write(void *data);
static void ngx_http_influencers_redis_events_del_write(void *data);
static void ngx_http_influencers_redis_events_cleanup(void *data);


ngx_int_t
ngx_http_influencers_redis_events_attach(
    ngx_http_influencers_redis_events_t *re, redisAsyncContext *ac,
    ngx_log_t *log)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = re;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = ngx_http_influencers_redis_events_read_handler;
    c->write->handler = ngx_http_influencers_redis_events_write_handler;

    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    re->ac = ac;
    re->connection = c;
    re->writing = 0;

    ac->ev.data = re;
    ac->ev.addRead = ngx_http_influencers_redis_events_add_read;
    ac->ev.delRead = ngx_http_influencers_redis_events_del_read;
    ac->ev.addWrite = ngx_http_influencers_redis_events_add_write;
    ac->ev.delWrite = ngx_http_influencers_redis_events_del_write;
    ac->ev.cleanup = ngx_http_influencers_redis_events_cleanup;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, log, 0,
                   "influencers redis: *%uA attached to fd:%d",
                   c->number, c->fd);

    return NGX_OK;
}


/*
 * hiredis may free the context from inside either call (an error, EOF,
 * our own redisAsyncFree() from a reply's callback): nothing of the
 * connection is touched after it.
 */

static void
ngx_http_influencers_redis_events_read_handler(ngx_event_t *rev)
{
    ngx_connection_t                     *c;
    ngx_http_influencers_redis_events_t  *re;

    c = rev->data;
    re = c->data;

    redisAsyncHandleRead(re->ac);
}


static void
ngx_http_influencers_redis_events_write_handler(ngx_event_t *wev)
{
    ngx_connection_t                     *c;
    ngx_http_influencers_redis_events_t  *re;

    c = wev->data;
    re = c->data;

    /* re is the caller's and outlives the connection */

    re->writing = 1;
    redisAsyncHandleWrite(re->ac);
    re->writing = 0;
}


static void
ngx_http_influencers_redis_events_add_read(void *data)
{
    ngx_http_influencers_redis_events_t *re = data;

    ngx_event_t  *rev;

    rev = re->connection->read;

    if (rev->active) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rev->log, 0,
                   "influencers redis: *%uA read event added",
                   re->connection->number);

    /* nginx has logged why it failed; the command timeout ends it */

    (void) ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT);
}


static void
ngx_http_influencers_redis_events_del_read(void *data)
{
    ngx_http_influencers_redis_events_t *re = data;

    ngx_event_t  *rev;

    rev = re->connection->read;

    if (rev->active) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rev->log, 0,
                       "influencers redis: *%uA read event removed",
                       re->connection->number);

        (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_influencers_redis_events_add_write(void *data)
{
    ngx_http_influencers_redis_events_t *re = data;

    ngx_event_t  *wev;

    wev = re->connection->write;

    if (wev->active) {
        return;
    }

    /*
     * Connected, and not called back by a write that could not finish:
     * the socket has room, write once the loop has run what is ready now.
     */

    if (!re->writing && (re->ac->c.flags & REDIS_CONNECTED)) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, wev->log, 0,
                       "influencers redis: *%uA write posted",
                       re->connection->number);

        ngx_post_event(wev, &ngx_posted_events);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, wev->log, 0,
                   "influencers redis: *%uA write event added",
                   re->connection->number);

    (void) ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
}


static void
ngx_http_influencers_redis_events_del_write(void *data)
{
    ngx_http_influencers_redis_events_t *re = data;

    ngx_event_t  *wev;

    wev = re->connection->write;

    if (wev->active) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, wev->log, 0,
                       "influencers redis: *%uA write event removed",
                       re->connection->number);

        (void) ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


/*
 * The context is being freed, and redisFree() closes the socket right
 * after this: its events go as ngx_close_connection() would remove them
 * (NGX_CLOSE_EVENT: the close takes the socket out of epoll), but the
 * socket is left to hiredis.
 */

static void
ngx_http_influencers_redis_events_cleanup(void *data)
{
    ngx_http_influencers_redis_events_t *re = data;

    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    c = re->connection;
    ac = re->ac;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "influencers redis: *%uA cleanup", c->number);

    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;

    /* a stale event of this socket is then recognized by its fd */

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    re->connection = NULL;
    re->ac = NULL;
    re->writing = 0;

    ac->ev.data = NULL;
    ac->ev.addRead = NULL;
    ac->ev.delRead = NULL;
    ac->ev.addWrite = NULL;
    ac->ev.delWrite = NULL;
    ac->ev.cleanup = NULL;

    if (re->gone) {
        re->gone(ac, re->data);
    }
}
