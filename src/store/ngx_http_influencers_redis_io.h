
/*
 * Copyright (C) The influencers module authors.
 *
 * RESP over nginx's own connections: one connection to one Redis server,
 * made with ngx_event_connect_peer() (TLS with ngx_ssl where the server
 * wants it), commands formatted by hiredis's redisFormatCommandArgv() and
 * pipelined, replies parsed by its redisReader and handed back in order.
 * Nothing here knows what the commands mean.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REDIS_IO_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REDIS_IO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_INFLUENCERS_REDIS_IO_ERROR_LEN  128


typedef struct ngx_http_influencers_redis_io_s
    ngx_http_influencers_redis_io_t;
typedef struct ngx_http_influencers_redis_call_s
    ngx_http_influencers_redis_call_t;


/* a reply, or NULL: the connection went before it came */
typedef void (*ngx_http_influencers_redis_io_reply_pt)(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);

typedef void (*ngx_http_influencers_redis_io_event_pt)(
    ngx_http_influencers_redis_io_t *io);


/* how to reach the servers of one configuration: shared by their links */

typedef struct {
    ngx_msec_t                     connect_timeout;
#if (NGX_SSL)
    ngx_ssl_t                     *ssl;         /* NULL: plaintext */
    ngx_str_t                      ssl_name;    /* SNI and the name checked;
                                                   empty: the server's host */
    ngx_flag_t                     ssl_server_name;
    ngx_flag_t                     ssl_verify;
    ngx_flag_t                     ssl_session_reuse;
#endif
} ngx_http_influencers_redis_tls_t;


/* one server: where it is, as the configuration or a topology names it */

typedef struct {
    struct sockaddr               *sockaddr;
    socklen_t                      socklen;
    ngx_str_t                      name;        /* host:port, for the log */
    ngx_str_t                      host;        /* for SNI and checks */
    ngx_uint_t                     path;        /* a unix socket */
} ngx_http_influencers_redis_addr_t;


struct ngx_http_influencers_redis_io_s {
    ngx_peer_connection_t          peer;
    ngx_http_influencers_redis_addr_t  *addr;
    ngx_http_influencers_redis_tls_t   *tls;
    redisReader                   *reader;

    /* what is formatted and not yet written */
    u_char                        *out;
    size_t                         out_pos;
    size_t                         out_len;
    size_t                         out_size;

    ngx_queue_t                    calls;       /* awaiting replies */
    ngx_http_influencers_redis_call_t  *free;
    void                          *chunks;

    ngx_event_t                    timer;       /* connect and handshake */
    ngx_log_t                     *log;
    ngx_log_t                      conn_log;    /* nginx's words on it */
#if (NGX_SSL)
    ngx_ssl_session_t             *session;     /* for the next handshake */
#endif

    ngx_http_influencers_redis_io_event_pt  closed;
    ngx_http_influencers_redis_io_reply_pt  push;   /* a reply no call
                                                       waits for (pub/sub) */
    void                          *data;

    ngx_uint_t                     generation;  /* a new one per connect */
    size_t                         unparsed;    /* of the reply to come */
    u_char                   error[NGX_HTTP_INFLUENCERS_REDIS_IO_ERROR_LEN];
    size_t                         error_len;   /* why it closed */

    unsigned                       state:2;
};


#define NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE        0
#define NGX_HTTP_INFLUENCERS_REDIS_IO_CONNECTING  1
#define NGX_HTTP_INFLUENCERS_REDIS_IO_UP          2


void ngx_http_influencers_redis_io_init(ngx_http_influencers_redis_io_t *io,
    ngx_http_influencers_redis_addr_t *addr,
    ngx_http_influencers_redis_tls_t *tls, ngx_log_t *log);
ngx_int_t ngx_http_influencers_redis_io_connect(
    ngx_http_influencers_redis_io_t *io);
ngx_int_t ngx_http_influencers_redis_io_send(
    ngx_http_influencers_redis_io_t *io, int argc, const char **argv,
    const size_t *argvlen, ngx_http_influencers_redis_io_reply_pt handler,
    void *data);
void ngx_http_influencers_redis_io_close(ngx_http_influencers_redis_io_t *io,
    const char *why);
void ngx_http_influencers_redis_io_free(ngx_http_influencers_redis_io_t *io);


#endif /* _NGX_HTTP_INFLUENCERS_REDIS_IO_H_INCLUDED_ */
