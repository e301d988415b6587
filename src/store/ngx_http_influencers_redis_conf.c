
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_redis_conf.h"


typedef enum {
    NGX_HTTP_INFLUENCERS_RP_PASSWORD = 0,
    NGX_HTTP_INFLUENCERS_RP_USER,
    NGX_HTTP_INFLUENCERS_RP_DB,
    NGX_HTTP_INFLUENCERS_RP_PREFIX,
    NGX_HTTP_INFLUENCERS_RP_CONNECT_TIMEOUT,
    NGX_HTTP_INFLUENCERS_RP_TIMEOUT,
    NGX_HTTP_INFLUENCERS_RP_ON_ERROR,
    NGX_HTTP_INFLUENCERS_RP_WAIT,
    NGX_HTTP_INFLUENCERS_RP_SENTINEL,
    NGX_HTTP_INFLUENCERS_RP_MASTER,
    NGX_HTTP_INFLUENCERS_RP_SENTINEL_PASSWORD,
    NGX_HTTP_INFLUENCERS_RP_SENTINEL_USER,
    NGX_HTTP_INFLUENCERS_RP_SSL,
    NGX_HTTP_INFLUENCERS_RP_SSL_VERIFY,
    NGX_HTTP_INFLUENCERS_RP_SSL_VERIFY_DEPTH,
    NGX_HTTP_INFLUENCERS_RP_SSL_TRUSTED,
    NGX_HTTP_INFLUENCERS_RP_SSL_SERVER_NAME,
    NGX_HTTP_INFLUENCERS_RP_SSL_NAME,
    NGX_HTTP_INFLUENCERS_RP_SSL_CERTIFICATE,
    NGX_HTTP_INFLUENCERS_RP_SSL_KEY,
    NGX_HTTP_INFLUENCERS_RP_SSL_PROTOCOLS,
    NGX_HTTP_INFLUENCERS_RP_SSL_CIPHERS,
    NGX_HTTP_INFLUENCERS_RP_SSL_SESSION_REUSE,
    NGX_HTTP_INFLUENCERS_RP_CLUSTER,
    NGX_HTTP_INFLUENCERS_RP_NONE
} ngx_http_influencers_redis_param_e;


/* the parameters of influencers_redis after the address, in enum order */
static const char  *ngx_http_influencers_redis_conf_params[] = {
    "password", "user", "db", "prefix", "connect_timeout", "timeout",
    "on_error", "wait", "sentinel", "master", "sentinel_password",
    "sentinel_user", "ssl", "ssl_verify", "ssl_verify_depth",
    "ssl_trusted_certificate", "ssl_server_name", "ssl_name",
    "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
    "ssl_ciphers", "ssl_session_reuse", "cluster", NULL
};


/* what the TLS parameters say, until the context is made of them */

typedef struct {
    ngx_flag_t                           on;
    ngx_flag_t                           verify;
    ngx_int_t                            verify_depth;
    ngx_flag_t                           server_name;
    ngx_flag_t                           session_reuse;
    ngx_uint_t                           protocols;
    ngx_str_t                            trusted;
    ngx_str_t                            certificate;
    ngx_str_t                            key;
    ngx_str_t                            ciphers;
    ngx_str_t                            name;
} ngx_http_influencers_redis_ssl_conf_t;


typedef struct {
    ngx_conf_t                          *cf;
    const char                          *param;
} ngx_http_influencers_redis_conf_where_t;


static ngx_http_influencers_redis_param_e
    ngx_http_influencers_redis_conf_param(ngx_str_t *name);
static char *ngx_http_influencers_redis_conf_value(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl,
    ngx_http_influencers_redis_param_e param, ngx_str_t *name, ngx_str_t *s,
    ngx_uint_t *fallback);
static char *ngx_http_influencers_redis_conf_address(ngx_conf_t *cf,
    ngx_str_t *value, ngx_http_influencers_redis_addr_t *addr);
static char *ngx_http_influencers_redis_conf_list(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *value, ngx_array_t **list);
static char *ngx_http_influencers_redis_conf_secret(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *value, ngx_str_t *secret);
static char *ngx_http_influencers_redis_conf_msec(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *value, ngx_msec_t *msec);
static char *ngx_http_influencers_redis_conf_flag(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *value, ngx_flag_t *flag);
static char *ngx_http_influencers_redis_conf_protocols(ngx_conf_t *cf,
    ngx_str_t *value, ngx_uint_t *protocols);
static char *ngx_http_influencers_redis_conf_check(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl, ngx_uint_t seen);
#if (NGX_SSL)
static u_char *ngx_http_influencers_redis_conf_where(ngx_log_t *log,
    u_char *buf, size_t len);
#endif
static char *ngx_http_influencers_redis_conf_tls(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl);


/*
 * influencers_redis zone=NAME ADDRESS [password=SECRET] [user=NAME]
 *     [db=N] [prefix=STRING] [connect_timeout=TIME] [timeout=TIME]
 *     [on_error=503|local] [wait=N] [ssl=on ...]
 * influencers_redis zone=NAME sentinel=ADDRESS,... master=NAME ...
 *
 * A password never appears in a message: an unknown parameter is named by
 * what comes before its "=".
 */

char *
ngx_http_influencers_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_influencers_zone_t *zone)
{
    u_char                                 *p;
    ngx_str_t                              *value, name, s;
    ngx_uint_t                              i, first, fallback, seen;
    ngx_http_influencers_redis_conf_t      *conf;
    ngx_http_influencers_redis_param_e      param;
    ngx_http_influencers_redis_ssl_conf_t   ssl;

    value = cf->args->elts;

    if (zone->redis) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_redis\" is duplicate for zone "
                           "\"%V\"", &zone->name);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts < 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_redis\" needs the address of "
                           "Redis after \"%V\": host:port, unix:path or "
                           "sentinel=", &value[1]);
        return NGX_CONF_ERROR;
    }

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_redis_conf_t));
    if (conf == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&conf->prefix, "influencers");
    conf->tls.connect_timeout = 500;
    conf->timeout = 200;

    ngx_memzero(&ssl, sizeof(ngx_http_influencers_redis_ssl_conf_t));
    ssl.verify = NGX_CONF_UNSET;
    ssl.verify_depth = 1;
    ssl.session_reuse = 1;
    ssl.protocols = NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3;
    ngx_str_set(&ssl.ciphers, "DEFAULT");

    /* the address, unless Sentinel names the master */

    first = 2;

    if (ngx_strlchr(value[2].data, value[2].data + value[2].len, '=')
        == NULL)
    {
        if (ngx_http_influencers_redis_conf_address(cf, &value[2],
                                                    &conf->addr)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        conf->name = value[2];
        first = 3;
    }

    fallback = 0;
    seen = 0;

    for (i = first; i < cf->args->nelts; i++) {

        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (p == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" of "
                               "\"influencers_redis\": name=value is "
                               "expected (the address comes right after "
                               "zone=)", &value[i]);
            return NGX_CONF_ERROR;
        }

        name.data = value[i].data;
        name.len = p - value[i].data;
        s.data = p + 1;
        s.len = value[i].data + value[i].len - s.data;

        param = ngx_http_influencers_redis_conf_param(&name);

        if (param == NGX_HTTP_INFLUENCERS_RP_NONE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V=...\" of "
                               "\"influencers_redis\"", &name);
            return NGX_CONF_ERROR;
        }

        if (seen & (1 << param)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V=\" is duplicate in "
                               "\"influencers_redis\"", &name);
            return NGX_CONF_ERROR;
        }

        seen |= 1 << param;

        if (ngx_http_influencers_redis_conf_value(cf, conf, &ssl, param,
                                                  &name, &s, &fallback)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_influencers_redis_conf_check(cf, conf, &ssl, seen)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ssl.on
        && ngx_http_influencers_redis_conf_tls(cf, conf, &ssl)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    zone->redis = conf;

    if (fallback) {
        zone->fallback = 1;
    }

    return NGX_CONF_OK;
}


static ngx_http_influencers_redis_param_e
ngx_http_influencers_redis_conf_param(ngx_str_t *name)
{
    ngx_uint_t   n;
    const char  *param;

    for (n = 0; ngx_http_influencers_redis_conf_params[n]; n++) {
        param = ngx_http_influencers_redis_conf_params[n];

        if (name->len == ngx_strlen(param)
            && ngx_strncmp(name->data, param, name->len) == 0)
        {
            return (ngx_http_influencers_redis_param_e) n;
        }
    }

    return NGX_HTTP_INFLUENCERS_RP_NONE;
}


static char *
ngx_http_influencers_redis_conf_value(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl,
    ngx_http_influencers_redis_param_e param, ngx_str_t *name, ngx_str_t *s,
    ngx_uint_t *fallback)
{
    u_char     *p, *last;
    ngx_int_t   n;

    switch (param) {

    case NGX_HTTP_INFLUENCERS_RP_PASSWORD:
        return ngx_http_influencers_redis_conf_secret(cf, name, s,
                                                      &conf->password);

    case NGX_HTTP_INFLUENCERS_RP_USER:
        return ngx_http_influencers_redis_conf_secret(cf, name, s,
                                                      &conf->user);

    case NGX_HTTP_INFLUENCERS_RP_SENTINEL_PASSWORD:
        return ngx_http_influencers_redis_conf_secret(cf, name, s,
                                                   &conf->sentinel_password);

    case NGX_HTTP_INFLUENCERS_RP_SENTINEL_USER:
        return ngx_http_influencers_redis_conf_secret(cf, name, s,
                                                      &conf->sentinel_user);

    case NGX_HTTP_INFLUENCERS_RP_DB:
        n = ngx_atoi(s->data, s->len);

        if (n == NGX_ERROR || n > 2147483647) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid db \"%V\": a number from 0 to "
                               "2147483647", s);
            return NGX_CONF_ERROR;
        }

        conf->db = (ngx_uint_t) n;
        conf->db_text = *s;
        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_PREFIX:
        last = s->data + s->len;

        for (p = s->data; p < last; p++) {
            if (*p <= 0x20 || *p >= 0x7f) {
                break;
            }
        }

        if (s->len == 0 || s->len > NGX_HTTP_INFLUENCERS_PREFIX_MAX
            || p != last)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid prefix \"%V\": from 1 to %d visible "
                               "ASCII characters, without spaces", s,
                               NGX_HTTP_INFLUENCERS_PREFIX_MAX);
            return NGX_CONF_ERROR;
        }

        conf->prefix = *s;
        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_CONNECT_TIMEOUT:
        return ngx_http_influencers_redis_conf_msec(cf, name, s,
                                                 &conf->tls.connect_timeout);

    case NGX_HTTP_INFLUENCERS_RP_TIMEOUT:
        return ngx_http_influencers_redis_conf_msec(cf, name, s,
                                                    &conf->timeout);

    case NGX_HTTP_INFLUENCERS_RP_ON_ERROR:
        if (s->len == 3 && ngx_strncmp(s->data, "503", 3) == 0) {
            *fallback = 0;

        } else if (s->len == 5 && ngx_strncmp(s->data, "local", 5) == 0) {
            *fallback = 1;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid on_error \"%V\": \"503\" or "
                               "\"local\" is expected", s);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_WAIT:
        n = ngx_atoi(s->data, s->len);

        if (n == NGX_ERROR || n > NGX_HTTP_INFLUENCERS_WAIT_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid wait \"%V\": the number of replicas "
                               "to wait for, from 0 to %d", s,
                               NGX_HTTP_INFLUENCERS_WAIT_MAX);
            return NGX_CONF_ERROR;
        }

        conf->wait = (ngx_uint_t) n;
        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_SENTINEL:
        return ngx_http_influencers_redis_conf_list(cf, name, s,
                                                    &conf->sentinels);

    case NGX_HTTP_INFLUENCERS_RP_CLUSTER:
        conf->name = *s;
        return ngx_http_influencers_redis_conf_list(cf, name, s,
                                                    &conf->cluster);

    case NGX_HTTP_INFLUENCERS_RP_MASTER:
        for (p = s->data; p < s->data + s->len; p++) {
            if (*p <= 0x20 || *p >= 0x7f) {
                break;
            }
        }

        if (s->len == 0 || s->len > 128 || p != s->data + s->len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid master \"%V\": the name the "
                               "sentinels monitor it by, 1 to 128 visible "
                               "ASCII characters", s);
            return NGX_CONF_ERROR;
        }

        conf->master = *s;
        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_SSL:
        return ngx_http_influencers_redis_conf_flag(cf, name, s, &ssl->on);

    case NGX_HTTP_INFLUENCERS_RP_SSL_VERIFY:
        return ngx_http_influencers_redis_conf_flag(cf, name, s,
                                                    &ssl->verify);

    case NGX_HTTP_INFLUENCERS_RP_SSL_SERVER_NAME:
        return ngx_http_influencers_redis_conf_flag(cf, name, s,
                                                    &ssl->server_name);

    case NGX_HTTP_INFLUENCERS_RP_SSL_SESSION_REUSE:
        return ngx_http_influencers_redis_conf_flag(cf, name, s,
                                                    &ssl->session_reuse);

    case NGX_HTTP_INFLUENCERS_RP_SSL_VERIFY_DEPTH:
        n = ngx_atoi(s->data, s->len);

        if (n == NGX_ERROR || n < 1 || n > 100) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid ssl_verify_depth \"%V\": a number "
                               "from 1 to 100", s);
            return NGX_CONF_ERROR;
        }

        ssl->verify_depth = n;
        return NGX_CONF_OK;

    case NGX_HTTP_INFLUENCERS_RP_SSL_PROTOCOLS:
        return ngx_http_influencers_redis_conf_protocols(cf, s,
                                                         &ssl->protocols);

    default:
        break;
    }

    /* the TLS parameters that take a file, a name or a list */

    if (s->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty \"%V=\" in \"influencers_redis\"", name);
        return NGX_CONF_ERROR;
    }

    switch (param) {

    case NGX_HTTP_INFLUENCERS_RP_SSL_TRUSTED:
        ssl->trusted = *s;
        break;

    case NGX_HTTP_INFLUENCERS_RP_SSL_NAME:
        ssl->name = *s;
        break;

    case NGX_HTTP_INFLUENCERS_RP_SSL_CERTIFICATE:
        ssl->certificate = *s;
        break;

    case NGX_HTTP_INFLUENCERS_RP_SSL_KEY:
        ssl->key = *s;
        break;

    default: /* NGX_HTTP_INFLUENCERS_RP_SSL_CIPHERS */
        ssl->ciphers = *s;
        break;
    }

    return NGX_CONF_OK;
}


/* what the parameters say together */

static char *
ngx_http_influencers_redis_conf_check(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl, ngx_uint_t seen)
{
    ngx_uint_t  i;

    if (conf->user.len && conf->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"user=\" of \"influencers_redis\" needs "
                           "\"password=\"");
        return NGX_CONF_ERROR;
    }

    if (conf->sentinel_user.len && conf->sentinel_password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinel_user=\" of \"influencers_redis\" "
                           "needs \"sentinel_password=\"");
        return NGX_CONF_ERROR;
    }

    if ((conf->addr.sockaddr != NULL) + (conf->sentinels != NULL)
        + (conf->cluster != NULL) > 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_redis\" takes one of an address, "
                           "\"sentinel=\" and \"cluster=\"");
        return NGX_CONF_ERROR;
    }

    if (conf->cluster && conf->db) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"db=\" of \"influencers_redis\" cannot be used "
                           "with \"cluster=\": a cluster has database 0 "
                           "only");
        return NGX_CONF_ERROR;
    }

    if (conf->sentinels == NULL && conf->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_redis\" needs the address of "
                           "Redis right after zone=: host:port or "
                           "unix:path, \"cluster=\", or \"sentinel=\" with "
                           "\"master=\"");
        return NGX_CONF_ERROR;
    }

    if (conf->sentinels && conf->master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"sentinel=\" of \"influencers_redis\" needs "
                           "\"master=\": the name the sentinels monitor "
                           "the master by");
        return NGX_CONF_ERROR;
    }

    if (conf->sentinels == NULL
        && (conf->master.len || conf->sentinel_password.len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s=\" of \"influencers_redis\" needs "
                           "\"sentinel=\"",
                           conf->master.len ? "master" : "sentinel_password");
        return NGX_CONF_ERROR;
    }

    /* what the log calls it: the master may move */

    if (conf->sentinels) {
        conf->name.data = ngx_pnalloc(cf->pool, sizeof("sentinel master ")
                                                + conf->master.len);
        if (conf->name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        conf->name.len = ngx_sprintf(conf->name.data, "sentinel master %V",
                                     &conf->master)
                         - conf->name.data;
    }

    if (conf->wait) {
        conf->wait_len = ngx_sprintf(conf->wait_text, "%ui", conf->wait)
                         - conf->wait_text;

        /* WAIT answers within the operation's timeout */
        conf->wait_ms_len = ngx_sprintf(conf->wait_ms, "%M",
                                        ngx_max(conf->timeout * 3 / 4, 1))
                            - conf->wait_ms;
    }

    if (!ssl->on) {
        for (i = NGX_HTTP_INFLUENCERS_RP_SSL_VERIFY;
             i <= NGX_HTTP_INFLUENCERS_RP_SSL_SESSION_REUSE;
             i++)
        {
            if (seen & (1 << i)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%s=\" of \"influencers_redis\" needs "
                                   "\"ssl=on\"",
                                   ngx_http_influencers_redis_conf_params[i]);
                return NGX_CONF_ERROR;
            }
        }

        return NGX_CONF_OK;
    }

    if (ssl->verify == NGX_CONF_UNSET) {
        ssl->verify = 1;
    }

    if (ssl->verify && ssl->trusted.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ssl=on\" of \"influencers_redis\" verifies the "
                           "server's certificate: it needs "
                           "\"ssl_trusted_certificate=\" (or "
                           "\"ssl_verify=off\")");
        return NGX_CONF_ERROR;
    }

    if ((ssl->certificate.len == 0) != (ssl->key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s=\" of \"influencers_redis\" needs \"%s=\"",
                           ssl->certificate.len ? "ssl_certificate"
                                                : "ssl_certificate_key",
                           ssl->certificate.len ? "ssl_certificate_key"
                                                : "ssl_certificate");
        return NGX_CONF_ERROR;
    }

    if (conf->addr.path && ssl->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ssl=on\" of \"influencers_redis\" over a unix "
                           "socket needs \"ssl_name=\": the name its "
                           "certificate is checked for");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


#if (NGX_SSL)

static u_char *
ngx_http_influencers_redis_conf_where(ngx_log_t *log, u_char *buf,
    size_t len)
{
    ngx_http_influencers_redis_conf_where_t  *where = log->data;

    ngx_conf_t  *cf;

    cf = where->cf;

    return ngx_snprintf(buf, len, " (\"%s\" of \"influencers_redis\" in "
                        "%V:%ui)", where->param,
                        &cf->conf_file->file.name, cf->conf_file->line);
}


static char *
ngx_http_influencers_redis_conf_tls(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl)
{
    ngx_log_t                                log;
    ngx_ssl_t                               *ctx;
    ngx_pool_cleanup_t                      *cln;
    ngx_http_influencers_redis_conf_where_t  where;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->log = cf->log;

    if (ngx_ssl_create(ctx, ssl->protocols, NULL) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ctx);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ctx;

    /* what OpenSSL says of a file is told where it was named */

    log = *cf->log;
    log.handler = ngx_http_influencers_redis_conf_where;
    log.data = &where;
    where.cf = cf;
    ctx->log = &log;

    where.param = "ssl_ciphers";

    if (ngx_ssl_ciphers(cf, ctx, &ssl->ciphers, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    where.param = "ssl_certificate\" and \"ssl_certificate_key";

    if (ssl->certificate.len
        && ngx_ssl_certificate(cf, ctx, &ssl->certificate, &ssl->key, NULL)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    where.param = "ssl_trusted_certificate";

    if (ssl->verify
        && ngx_ssl_trusted_certificate(cf, ctx, &ssl->trusted,
                                       ssl->verify_depth)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ctx->log = cf->log;

    if (ngx_ssl_client_session_cache(cf, ctx, ssl->session_reuse)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    conf->tls.ssl = ctx;
    conf->tls.ssl_name = ssl->name;
    conf->tls.ssl_server_name = ssl->server_name;
    conf->tls.ssl_verify = ssl->verify;
    conf->tls.ssl_session_reuse = ssl->session_reuse;

    return NGX_CONF_OK;
}

#else

static char *
ngx_http_influencers_redis_conf_tls(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf,
    ngx_http_influencers_redis_ssl_conf_t *ssl)
{
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"ssl=on\" of \"influencers_redis\" needs nginx "
                       "built with OpenSSL");
    return NGX_CONF_ERROR;
}

#endif


/*
 * host:port, with the host a literal address or a name resolved now, so
 * that no request ever waits on DNS; or unix:path.
 */

static char *
ngx_http_influencers_redis_conf_address(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_influencers_redis_addr_t *addr)
{
    size_t      len, max;
    ngx_url_t   u;

    if (value->len >= 5 && ngx_strncmp(value->data, "unix:", 5) == 0) {
        len = value->len - 5;
        max = sizeof(((struct sockaddr_un *) 0)->sun_path) - 1;

        if (len == 0 || len > max) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid Redis address \"%V\": the path of "
                               "a unix socket is from 1 to %uz bytes",
                               value, max);
            return NGX_CONF_ERROR;
        }
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": %s", value,
                           u.err ? u.err : "cannot be parsed");
        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0 || (u.family != AF_UNIX && u.no_port)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": host:port is "
                           "expected", value);
        return NGX_CONF_ERROR;
    }

    /* a name with several addresses: the first, as a client would */

    addr->sockaddr = u.addrs[0].sockaddr;
    addr->socklen = u.addrs[0].socklen;
    addr->name = *value;
    addr->host = u.host;
    addr->path = (u.family == AF_UNIX);

    return NGX_CONF_OK;
}


/* sentinel= and cluster=: host:port,host:port... */

static char *
ngx_http_influencers_redis_conf_list(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *value, ngx_array_t **list)
{
    u_char                             *p, *last, *comma;
    ngx_str_t                           one;
    ngx_http_influencers_redis_addr_t  *addr;

    *list = ngx_array_create(cf->pool, 3,
                             sizeof(ngx_http_influencers_redis_addr_t));
    if (*list == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value->data;
    last = value->data + value->len;

    while (p <= last) {
        comma = ngx_strlchr(p, last, ',');

        if (comma == NULL) {
            comma = last;
        }

        one.data = p;
        one.len = comma - p;

        if (one.len == 0 || (*list)->nelts == 16) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %V \"%V\": from 1 to 16 "
                               "host:port addresses, separated by commas",
                               name, value);
            return NGX_CONF_ERROR;
        }

        addr = ngx_array_push(*list);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(addr, sizeof(ngx_http_influencers_redis_addr_t));

        if (ngx_http_influencers_redis_conf_address(cf, &one, addr)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (addr->path) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %V \"%V\": host:port addresses, "
                               "not unix sockets", name, value);
            return NGX_CONF_ERROR;
        }

        p = comma + 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_redis_conf_secret(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *value, ngx_str_t *secret)
{
    if (value->len == 0 || value->len > 512) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V=\" of \"influencers_redis\": from "
                           "1 to 512 bytes", name);
        return NGX_CONF_ERROR;
    }

    *secret = *value;

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_redis_conf_msec(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *value, ngx_msec_t *msec)
{
    ngx_int_t  n;

    n = ngx_parse_time(value, 0);

    if (n == NGX_ERROR || n < 1 || n > 60000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %V \"%V\": from 1ms to 60s", name, value);
        return NGX_CONF_ERROR;
    }

    *msec = (ngx_msec_t) n;

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_redis_conf_flag(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *value, ngx_flag_t *flag)
{
    if (value->len == 2 && ngx_strncmp(value->data, "on", 2) == 0) {
        *flag = 1;

    } else if (value->len == 3 && ngx_strncmp(value->data, "off", 3) == 0) {
        *flag = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %V \"%V\": \"on\" or \"off\" is "
                           "expected", name, value);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* TLSv1.2:TLSv1.3: one argument holds no spaces */

static char *
ngx_http_influencers_redis_conf_protocols(ngx_conf_t *cf, ngx_str_t *value,
    ngx_uint_t *protocols)
{
    u_char      *p, *last, *colon;
    size_t       len;
    ngx_uint_t   i;

    static struct {
        const char  *name;
        ngx_uint_t   mask;
    } known[] = {
        { "TLSv1", NGX_SSL_TLSv1 },
        { "TLSv1.1", NGX_SSL_TLSv1_1 },
        { "TLSv1.2", NGX_SSL_TLSv1_2 },
        { "TLSv1.3", NGX_SSL_TLSv1_3 },
    };

    *protocols = 0;
    p = value->data;
    last = value->data + value->len;

    while (p <= last) {
        colon = ngx_strlchr(p, last, ':');

        if (colon == NULL) {
            colon = last;
        }

        len = colon - p;

        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            if (len == ngx_strlen(known[i].name)
                && ngx_strncmp(p, known[i].name, len) == 0)
            {
                break;
            }
        }

        if (i == sizeof(known) / sizeof(known[0])) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid ssl_protocols \"%V\": TLSv1, "
                               "TLSv1.1, TLSv1.2 or TLSv1.3, separated by "
                               "colons", value);
            return NGX_CONF_ERROR;
        }

        *protocols |= known[i].mask;
        p = colon + 1;
    }

    return NGX_CONF_OK;
}
