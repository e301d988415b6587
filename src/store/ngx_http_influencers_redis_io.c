
/*
 * Copyright (C) The influencers module authors.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_influencers_redis_io.h"


/*
 * A call waits for one reply: they are kept in the order the commands
 * were written, which is the order Redis answers in.  Calls come from a
 * free list of the connection's, allocated a chunk at a time and never
 * given back before the connection object is freed, so that a busy
 * connection allocates nothing once warm.
 */

#define NGX_HTTP_INFLUENCERS_REDIS_IO_CALLS  64
#define NGX_HTTP_INFLUENCERS_REDIS_IO_OUT    4096
#define NGX_HTTP_INFLUENCERS_REDIS_IO_READ   16384

/*
 * The most a reply may take: the module's are under 100 bytes, INFO a few
 * kilobytes, a cluster's map of 64 nodes some tens.  A server (or what
 * pretends to be one) that sends more, one reply or a stream of bytes
 * that never ends one, is cut off before the worker's memory is.
 */
#define NGX_HTTP_INFLUENCERS_REDIS_IO_REPLY_MAX  (1024 * 1024)

/*
 * And the most elements an array may say it has: hiredis allocates them
 * as the count comes, before a byte of them (a count of two billion took
 * a worker 40 s and 7 gigabytes).  A cluster's map of 16384 ranges is the
 * largest the module asks for.
 */
#define NGX_HTTP_INFLUENCERS_REDIS_IO_ELEMENTS_MAX  65536


struct ngx_http_influencers_redis_call_s {
    ngx_queue_t                              queue;
    ngx_http_influencers_redis_call_t       *next;     /* free list */
    ngx_http_influencers_redis_io_reply_pt   handler;
    void                                    *data;
};


typedef struct ngx_http_influencers_redis_calls_s
    ngx_http_influencers_redis_calls_t;

struct ngx_http_influencers_redis_calls_s {
    ngx_http_influencers_redis_calls_t      *next;
    ngx_http_influencers_redis_call_t
                               calls[NGX_HTTP_INFLUENCERS_REDIS_IO_CALLS];
};


static redisReplyObjectFunctions  ngx_http_influencers_redis_io_fn;
static void *(*ngx_http_influencers_redis_io_create_array)(
    const redisReadTask *task, int elements);


static void ngx_http_influencers_redis_io_connected(
    ngx_http_influencers_redis_io_t *io);
#if (NGX_SSL)
static ngx_int_t ngx_http_influencers_redis_io_ssl(
    ngx_http_influencers_redis_io_t *io, ngx_connection_t *c);
static void ngx_http_influencers_redis_io_ssl_done(ngx_connection_t *c);
static void ngx_http_influencers_redis_io_save_session(ngx_connection_t *c);
static ngx_int_t ngx_http_influencers_redis_io_check_name(ngx_connection_t *c,
    ngx_str_t *name);
static ngx_uint_t ngx_http_influencers_redis_io_literal(ngx_str_t *name);
#endif
static void ngx_http_influencers_redis_io_up(
    ngx_http_influencers_redis_io_t *io);
static void ngx_http_influencers_redis_io_write_handler(ngx_event_t *wev);
static void ngx_http_influencers_redis_io_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_influencers_redis_io_flush(
    ngx_http_influencers_redis_io_t *io);
static void ngx_http_influencers_redis_io_dispatch(
    ngx_http_influencers_redis_io_t *io);
static void ngx_http_influencers_redis_io_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_influencers_redis_io_test_connect(
    ngx_connection_t *c);
static ngx_http_influencers_redis_call_t *ngx_http_influencers_redis_io_call(
    ngx_http_influencers_redis_io_t *io);
static ngx_int_t ngx_http_influencers_redis_io_room(
    ngx_http_influencers_redis_io_t *io, size_t len);
static void *ngx_http_influencers_redis_io_array(const redisReadTask *task,
    int elements);
static void ngx_cdecl ngx_http_influencers_redis_io_error(
    ngx_http_influencers_redis_io_t *io, const char *fmt, ...);
static void ngx_http_influencers_redis_io_log_writer(ngx_log_t *log,
    ngx_uint_t level, u_char *buf, size_t len);


void
ngx_http_influencers_redis_io_init(ngx_http_influencers_redis_io_t *io,
    ngx_http_influencers_redis_addr_t *addr,
    ngx_http_influencers_redis_tls_t *tls, ngx_log_t *log)
{
    ngx_memzero(io, sizeof(ngx_http_influencers_redis_io_t));

    io->addr = addr;
    io->tls = tls;
    io->log = log;

    ngx_queue_init(&io->calls);

    /* a connect never keeps a worker that is shutting down */

    io->timer.handler = ngx_http_influencers_redis_io_timeout;
    io->timer.data = io;
    io->timer.log = log;
    io->timer.cancelable = 1;
}


/*
 * NGX_OK: connecting; commands may be sent already (they are written once
 * it is up), and closed() comes, from the event loop, if it fails.
 * NGX_DECLINED: failed at once (io->error says why), nothing comes.
 */

ngx_int_t
ngx_http_influencers_redis_io_connect(ngx_http_influencers_redis_io_t *io)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    if (io->state != NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE) {
        return NGX_OK;
    }

    io->error_len = 0;
    io->unparsed = 0;
    io->generation++;

    io->reader = redisReaderCreate();
    if (io->reader == NULL) {
        ngx_http_influencers_redis_io_error(io, "no memory for a reader");
        return NGX_DECLINED;
    }

    /* hiredis's own reply objects, but for arrays of a bounded size */

    if (ngx_http_influencers_redis_io_create_array == NULL) {
        ngx_http_influencers_redis_io_fn = *io->reader->fn;
        ngx_http_influencers_redis_io_create_array =
                                   ngx_http_influencers_redis_io_fn.createArray;
        ngx_http_influencers_redis_io_fn.createArray =
                                   ngx_http_influencers_redis_io_array;
    }

    io->reader->fn = &ngx_http_influencers_redis_io_fn;

    ngx_memzero(&io->peer, sizeof(ngx_peer_connection_t));

    io->peer.sockaddr = io->addr->sockaddr;
    io->peer.socklen = io->addr->socklen;
    io->peer.name = &io->addr->name;
    io->peer.get = ngx_event_get_peer;

    /*
     * What nginx says of this connection (a refused connect, a TLS alert,
     * at levels up to [crit]) goes through the writer below: kept as the
     * reason it closed, which the link logs once a minute, at [error].  A
     * server that keeps failing the same way would otherwise have nginx
     * say so at every reconnect.
     */

    io->conn_log = *io->log;
    io->conn_log.next = NULL;
    io->conn_log.handler = NULL;
    io->conn_log.writer = ngx_http_influencers_redis_io_log_writer;
    io->conn_log.wdata = io;

    if (io->conn_log.log_level < NGX_LOG_INFO) {
        io->conn_log.log_level = NGX_LOG_INFO;
    }

    io->peer.log = &io->conn_log;
    /* what nginx says of a refused connect goes to info: the link says
     * once a minute that Redis is unreachable */
    io->peer.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&io->peer);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, io->log, 0,
                   "influencers redis io: connect to %V: %i",
                   &io->addr->name, rc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        redisReaderFree(io->reader);
        io->reader = NULL;
        io->peer.connection = NULL;
        ngx_http_influencers_redis_io_error(io, "cannot connect");
        return NGX_DECLINED;
    }

    c = io->peer.connection;

    /* ngx_ssl wants a pool of the connection's */

    c->pool = ngx_create_pool(256, io->log);
    if (c->pool == NULL) {
        ngx_close_connection(c);
        io->peer.connection = NULL;
        redisReaderFree(io->reader);
        io->reader = NULL;
        ngx_http_influencers_redis_io_error(io, "no memory");
        return NGX_DECLINED;
    }

    c->data = io;
    c->read->handler = ngx_http_influencers_redis_io_read_handler;
    c->write->handler = ngx_http_influencers_redis_io_write_handler;

    io->state = NGX_HTTP_INFLUENCERS_REDIS_IO_CONNECTING;

    ngx_add_timer(&io->timer, io->tls->connect_timeout);

    if (rc == NGX_OK) {
        /* a unix socket connects at once */
        ngx_http_influencers_redis_io_connected(io);
    }

    return NGX_OK;
}


/* the socket is connected: TLS next where the server wants it */

static void
ngx_http_influencers_redis_io_connected(ngx_http_influencers_redis_io_t *io)
{
    ngx_connection_t  *c;

    c = io->peer.connection;

    if (ngx_http_influencers_redis_io_test_connect(c) != NGX_OK) {
        ngx_http_influencers_redis_io_close(io, "connect() failed");
        return;
    }

#if (NGX_SSL)

    if (io->tls->ssl && c->ssl == NULL) {
        if (ngx_http_influencers_redis_io_ssl(io, c) != NGX_OK) {
            ngx_http_influencers_redis_io_close(io, "TLS failed");
        }

        return;
    }

#endif

    ngx_http_influencers_redis_io_up(io);
}


#if (NGX_SSL)

static ngx_int_t
ngx_http_influencers_redis_io_ssl(ngx_http_influencers_redis_io_t *io,
    ngx_connection_t *c)
{
    u_char                            *p;
    ngx_int_t                          rc;
    ngx_str_t                         *name;
    ngx_http_influencers_redis_tls_t  *tls;

    tls = io->tls;

    if (ngx_ssl_create_connection(tls->ssl, c, NGX_SSL_CLIENT)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    name = tls->ssl_name.len ? &tls->ssl_name : &io->addr->host;

    /* SNI wants a name, not an address, and a C string */

    if (tls->ssl_server_name && name->len
        && !ngx_http_influencers_redis_io_literal(name))
    {
        p = ngx_pnalloc(c->pool, name->len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        (void) ngx_cpystrn(p, name->data, name->len + 1);

        if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) p) == 0) {
            ngx_ssl_error(NGX_LOG_ERR, io->log, 0,
                          "SSL_set_tlsext_host_name(\"%s\") failed", p);
            return NGX_ERROR;
        }
    }

    if (tls->ssl_session_reuse) {
        c->ssl->save_session = ngx_http_influencers_redis_io_save_session;

        if (io->session && ngx_ssl_set_session(c, io->session) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_http_influencers_redis_io_ssl_done;
        return NGX_OK;
    }

    ngx_http_influencers_redis_io_ssl_done(c);

    return NGX_OK;
}


static void
ngx_http_influencers_redis_io_ssl_done(ngx_connection_t *c)
{
    ngx_http_influencers_redis_io_t *io = c->data;

    long        rc;
    ngx_str_t  *name;

    if (!c->ssl->handshaked) {
        ngx_http_influencers_redis_io_close(io, "the TLS handshake failed");
        return;
    }

    if (io->tls->ssl_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_http_influencers_redis_io_error(io,
                                 "its certificate failed verification: %s",
                                 X509_verify_cert_error_string(rc));
            ngx_http_influencers_redis_io_close(io, NULL);
            return;
        }

        name = io->tls->ssl_name.len ? &io->tls->ssl_name : &io->addr->host;

        if (ngx_http_influencers_redis_io_check_name(c, name) != NGX_OK) {
            ngx_http_influencers_redis_io_error(io,
                                 "its certificate does not match \"%V\"",
                                 name);
            ngx_http_influencers_redis_io_close(io, NULL);
            return;
        }
    }

    c->read->handler = ngx_http_influencers_redis_io_read_handler;
    c->write->handler = ngx_http_influencers_redis_io_write_handler;

    ngx_http_influencers_redis_io_up(io);
}


/*
 * The name the certificate must hold: an address literal is looked for
 * among its IP addresses (nginx's own check reads DNS names only).
 */

static ngx_int_t
ngx_http_influencers_redis_io_check_name(ngx_connection_t *c,
    ngx_str_t *name)
{
    int    rc;
    X509  *cert;
    u_char  text[NGX_SOCKADDR_STRLEN + 1];

    if (!ngx_http_influencers_redis_io_literal(name)) {
        return ngx_ssl_check_host(c, name);
    }

    if (name->len >= sizeof(text)) {
        return NGX_ERROR;
    }

    cert = SSL_get_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_cpystrn(text, name->data, name->len + 1);

    rc = X509_check_ip_asc(cert, (char *) text, 0);

    X509_free(cert);

    return (rc == 1) ? NGX_OK : NGX_ERROR;
}


static ngx_uint_t
ngx_http_influencers_redis_io_literal(ngx_str_t *name)
{
    if (ngx_inet_addr(name->data, name->len) != INADDR_NONE) {
        return 1;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(name->data, name->len, NULL) == NGX_OK) {
        return 1;
    }
#endif

    return 0;
}


/* the session of a handshake (TLSv1.3: after it), for the next connect */

static void
ngx_http_influencers_redis_io_save_session(ngx_connection_t *c)
{
    ngx_http_influencers_redis_io_t *io = c->data;

    ngx_ssl_session_t  *session;

    session = ngx_ssl_get_session(c);

    if (session == NULL) {
        return;
    }

    if (io->session) {
        ngx_ssl_free_session(io->session);
    }

    io->session = session;
}

#endif


static void
ngx_http_influencers_redis_io_up(ngx_http_influencers_redis_io_t *io)
{
    ngx_connection_t  *c;

    c = io->peer.connection;

    if (io->timer.timer_set) {
        ngx_del_timer(&io->timer);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    io->state = NGX_HTTP_INFLUENCERS_REDIS_IO_UP;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, io->log, 0,
                   "influencers redis io: %V up", &io->addr->name);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_influencers_redis_io_close(io, "cannot wait for replies");
        return;
    }

    /* what was sent while connecting goes now */

    if (ngx_http_influencers_redis_io_flush(io) != NGX_OK) {
        ngx_http_influencers_redis_io_close(io, "a write failed");
    }
}


/*
 * A command, formatted and queued; written at once if the connection is
 * up, else once it is.  NGX_ERROR: no memory, or not connected; the
 * handler is not called.
 */

ngx_int_t
ngx_http_influencers_redis_io_send(ngx_http_influencers_redis_io_t *io,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_influencers_redis_io_reply_pt handler, void *data)
{
    int                                 len;
    char                               *cmd;
    ngx_http_influencers_redis_call_t  *call;

    if (io->state == NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE) {
        return NGX_ERROR;
    }

    call = ngx_http_influencers_redis_io_call(io);
    if (call == NULL) {
        return NGX_ERROR;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

    if (len < 0) {
        call->next = io->free;
        io->free = call;
        return NGX_ERROR;
    }

    if (ngx_http_influencers_redis_io_room(io, len) != NGX_OK) {
        redisFreeCommand(cmd);
        call->next = io->free;
        io->free = call;
        return NGX_ERROR;
    }

    ngx_memcpy(io->out + io->out_len, cmd, len);
    io->out_len += len;
    redisFreeCommand(cmd);

    call->handler = handler;
    call->data = data;
    ngx_queue_insert_tail(&io->calls, &call->queue);

    if (io->state == NGX_HTTP_INFLUENCERS_REDIS_IO_UP
        && io->peer.connection->write->ready)
    {
        /* written now; what does not go is written by the write event */

        if (ngx_http_influencers_redis_io_flush(io) != NGX_OK) {

            /* the call fails with the others, from the event loop */
            io->peer.connection->write->error = 1;
            ngx_post_event(io->peer.connection->write, &ngx_posted_events);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_redis_io_flush(ngx_http_influencers_redis_io_t *io)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = io->peer.connection;

    while (io->out_pos < io->out_len) {
        n = c->send(c, io->out + io->out_pos, io->out_len - io->out_pos);

        if (n == NGX_AGAIN) {
            return ngx_handle_write_event(c->write, 0);
        }

        if (n == NGX_ERROR || n == 0) {
            return NGX_ERROR;
        }

        io->out_pos += n;
    }

    io->out_pos = 0;
    io->out_len = 0;

    return NGX_OK;
}


static void
ngx_http_influencers_redis_io_write_handler(ngx_event_t *wev)
{
    ngx_connection_t                 *c;
    ngx_http_influencers_redis_io_t  *io;

    c = wev->data;
    io = c->data;

    if (wev->error) {
        ngx_http_influencers_redis_io_close(io, "a write failed");
        return;
    }

    if (io->state == NGX_HTTP_INFLUENCERS_REDIS_IO_CONNECTING) {
        ngx_http_influencers_redis_io_connected(io);
        return;
    }

    if (ngx_http_influencers_redis_io_flush(io) != NGX_OK) {
        ngx_http_influencers_redis_io_close(io, "a write failed");
    }
}


static void
ngx_http_influencers_redis_io_read_handler(ngx_event_t *rev)
{
    ssize_t                           n;
    ngx_uint_t                        generation;
    ngx_connection_t                 *c;
    ngx_http_influencers_redis_io_t  *io;
    u_char                            buf[NGX_HTTP_INFLUENCERS_REDIS_IO_READ];

    c = rev->data;
    io = c->data;

    if (io->state == NGX_HTTP_INFLUENCERS_REDIS_IO_CONNECTING) {
        ngx_http_influencers_redis_io_connected(io);
        return;
    }

    generation = io->generation;

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_influencers_redis_io_close(io,
                                                    "cannot wait for replies");
            }

            return;
        }

        if (n == 0) {
            ngx_http_influencers_redis_io_close(io, "closed by the server");
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_influencers_redis_io_close(io, "a read failed");
            return;
        }

        io->unparsed += n;

        if (io->unparsed > NGX_HTTP_INFLUENCERS_REDIS_IO_REPLY_MAX) {
            ngx_http_influencers_redis_io_close(io, "a reply over 1 megabyte");
            return;
        }

        if (redisReaderFeed(io->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_influencers_redis_io_close(io, "no memory for a reply");
            return;
        }

        ngx_http_influencers_redis_io_dispatch(io);

        /* a handler may have closed it, and another connect begun */

        if (io->generation != generation
            || io->state != NGX_HTTP_INFLUENCERS_REDIS_IO_UP)
        {
            return;
        }
    }
}


/* every whole reply to the call that waits for it, in order */

static void
ngx_http_influencers_redis_io_dispatch(ngx_http_influencers_redis_io_t *io)
{
    void                               *reply;
    ngx_uint_t                          generation;
    ngx_queue_t                        *q;
    ngx_http_influencers_redis_call_t  *call;

    generation = io->generation;

    for ( ;; ) {
        reply = NULL;

        if (redisReaderGetReply(io->reader, &reply) != REDIS_OK) {

            /* "Protocol error...", or "Out of memory": an array too long */

            ngx_http_influencers_redis_io_error(io, "a reply it cannot read "
                                                "(%s)", io->reader->errstr);
            ngx_http_influencers_redis_io_close(io, NULL);
            return;
        }

        if (reply == NULL) {
            return;
        }

        /* what is left in the reader belongs to the next reply */
        io->unparsed = io->reader->len - io->reader->pos;

        if (ngx_queue_empty(&io->calls)) {
            if (io->push) {
                io->push(io, reply, io->data);
                freeReplyObject(reply);

            } else {
                freeReplyObject(reply);
                ngx_http_influencers_redis_io_close(io, "a reply nothing "
                                                    "asked for");
                return;
            }

        } else {
            q = ngx_queue_head(&io->calls);
            ngx_queue_remove(q);
            call = ngx_queue_data(q, ngx_http_influencers_redis_call_t,
                                  queue);

            call->handler(io, reply, call->data);

            freeReplyObject(reply);

            call->next = io->free;
            io->free = call;
        }

        if (io->generation != generation
            || io->state != NGX_HTTP_INFLUENCERS_REDIS_IO_UP)
        {
            return;
        }
    }
}


static void
ngx_http_influencers_redis_io_timeout(ngx_event_t *ev)
{
    ngx_http_influencers_redis_io_t *io = ev->data;

    ngx_http_influencers_redis_io_error(io, "did not connect within %Mms",
                                        io->tls->connect_timeout);
    ngx_http_influencers_redis_io_close(io, NULL);
}


/*
 * The connection goes, and with it every call still waiting, each handed
 * a NULL reply; then closed().  The object stays, for the next connect.
 * why: a word for the log, unless the error was said already.
 */

void
ngx_http_influencers_redis_io_close(ngx_http_influencers_redis_io_t *io,
    const char *why)
{
    ngx_pool_t                         *pool;
    ngx_queue_t                        *q;
    ngx_connection_t                   *c;
    ngx_http_influencers_redis_call_t  *call;

    if (io->state == NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE) {
        return;
    }

    if (why && io->error_len == 0) {
        ngx_http_influencers_redis_io_error(io, "%s", why);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, io->log, 0,
                   "influencers redis io: %V closed: %*s", &io->addr->name,
                   io->error_len, io->error);

    io->state = NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE;
    io->generation++;

    if (io->timer.timer_set) {
        ngx_del_timer(&io->timer);
    }

    c = io->peer.connection;
    io->peer.connection = NULL;

    if (c) {
#if (NGX_SSL)
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }
#endif

        pool = c->pool;

        ngx_close_connection(c);

        if (pool) {
            ngx_destroy_pool(pool);
        }
    }

    if (io->reader) {
        redisReaderFree(io->reader);
        io->reader = NULL;
    }

    io->out_pos = 0;
    io->out_len = 0;

    while (!ngx_queue_empty(&io->calls)) {
        q = ngx_queue_head(&io->calls);
        ngx_queue_remove(q);
        call = ngx_queue_data(q, ngx_http_influencers_redis_call_t, queue);

        call->handler(io, NULL, call->data);

        call->next = io->free;
        io->free = call;
    }

    if (io->closed) {
        io->closed(io);
    }
}


/* the object itself, at the worker's exit: closed first, quietly */

void
ngx_http_influencers_redis_io_free(ngx_http_influencers_redis_io_t *io)
{
    ngx_http_influencers_redis_calls_t  *chunk, *next;

    io->closed = NULL;

    ngx_http_influencers_redis_io_close(io, "the worker exits");

    for (chunk = io->chunks; chunk; chunk = next) {
        next = chunk->next;
        ngx_free(chunk);
    }

    io->chunks = NULL;
    io->free = NULL;

    if (io->out) {
        ngx_free(io->out);
        io->out = NULL;
    }

#if (NGX_SSL)
    if (io->session) {
        ngx_ssl_free_session(io->session);
        io->session = NULL;
    }
#endif
}


static ngx_int_t
ngx_http_influencers_redis_io_test_connect(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        (void) ngx_connection_error(c, err, "connect() to Redis failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_http_influencers_redis_call_t *
ngx_http_influencers_redis_io_call(ngx_http_influencers_redis_io_t *io)
{
    ngx_uint_t                           i;
    ngx_http_influencers_redis_call_t   *call;
    ngx_http_influencers_redis_calls_t  *chunk;

    if (io->free == NULL) {
        chunk = ngx_alloc(sizeof(ngx_http_influencers_redis_calls_t),
                          io->log);
        if (chunk == NULL) {
            return NULL;
        }

        chunk->next = io->chunks;
        io->chunks = chunk;

        for (i = 0; i < NGX_HTTP_INFLUENCERS_REDIS_IO_CALLS; i++) {
            chunk->calls[i].next = io->free;
            io->free = &chunk->calls[i];
        }
    }

    call = io->free;
    io->free = call->next;

    return call;
}


/* room for len more bytes to write: the buffer doubles as it must */

static ngx_int_t
ngx_http_influencers_redis_io_room(ngx_http_influencers_redis_io_t *io,
    size_t len)
{
    u_char  *p;
    size_t   size;

    if (io->out_size - io->out_len >= len) {
        return NGX_OK;
    }

    /* what was written already makes room first */

    if (io->out_pos) {
        ngx_memmove(io->out, io->out + io->out_pos,
                    io->out_len - io->out_pos);
        io->out_len -= io->out_pos;
        io->out_pos = 0;

        if (io->out_size - io->out_len >= len) {
            return NGX_OK;
        }
    }

    size = ngx_max(io->out_size, NGX_HTTP_INFLUENCERS_REDIS_IO_OUT);

    while (size - io->out_len < len) {
        size *= 2;
    }

    p = ngx_alloc(size, io->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (io->out) {
        ngx_memcpy(p, io->out, io->out_len);
        ngx_free(io->out);
    }

    io->out = p;
    io->out_size = size;

    return NGX_OK;
}


/* NULL: the reader says it has no memory, and the connection goes */

static void *
ngx_http_influencers_redis_io_array(const redisReadTask *task, int elements)
{
    if (elements > NGX_HTTP_INFLUENCERS_REDIS_IO_ELEMENTS_MAX) {
        return NULL;
    }

    return ngx_http_influencers_redis_io_create_array(task, elements);
}


static void ngx_cdecl
ngx_http_influencers_redis_io_error(ngx_http_influencers_redis_io_t *io,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(io->error, io->error + sizeof(io->error), fmt, args);
    va_end(args);

    io->error_len = p - io->error;
}


static void
ngx_http_influencers_redis_io_log_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len)
{
    ngx_http_influencers_redis_io_t *io = log->wdata;

    u_char     *p, *last;
    ngx_log_t  *l;

    last = buf + len;

    if (level != NGX_LOG_DEBUG && io->error_len == 0) {

        /* "date [level] pid#tid: [*n ]text\n": the text */

        p = ngx_strlchr(buf, last, '#');
        p = p ? ngx_strlchr(p, last, ' ') : NULL;

        if (p) {
            p++;

            if (p < last && *p == '*') {
                p = ngx_strlchr(p, last, ' ');
                p = p ? p + 1 : last;
            }

            while (last > p && (last[-1] == LF || last[-1] == CR)) {
                last--;
            }

            io->error_len = ngx_min((size_t) (last - p), sizeof(io->error));
            ngx_memcpy(io->error, p, io->error_len);
        }
    }

    if (level != NGX_LOG_DEBUG) {
        return;
    }

    for (l = io->log; l; l = l->next) {

        if (l->log_level < level) {
            break;
        }

        if (l->writer) {
            l->writer(l, level, buf, len);

        } else {
            (void) ngx_write_fd(l->file->fd, buf, len);
        }
    }
}
