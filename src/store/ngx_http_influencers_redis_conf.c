
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_redis_conf.h"


/* the parameters of influencers_redis after the address, in this order */
static const char  *ngx_http_influencers_redis_conf_params[] = {
    "password", "user", "db", "prefix", "connect_timeout", "timeout",
    "on_error", NULL
};



static char *ngx_http_influencers_redis_conf_address(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf, ngx_str_t *value);
static char *ngx_http_influencers_redis_conf_msec(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *value, ngx_msec_t *msec);


/*
 * influencers_redis zone=NAME ADDRESS [password=SECRET] [user=NAME]
 *     [db=N] [prefix=STRING] [connect_timeout=TIME] [timeout=TIME]
 *     [on_error=503|local]
 *
 * A password never appears in a message: an unknown parameter is named by
 * what comes before its "=".
 */

char *
ngx_http_influencers_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_influencers_zone_t *zone)
{
    u_char                             *p, *last;
    ngx_int_t                           n;
    const char                         *param;
    ngx_str_t                          *value, name, s;
    ngx_uint_t                          i, fallback, seen;
    ngx_http_influencers_redis_conf_t  *conf;

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
                           "Redis after \"%V\": host:port or unix:path",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_redis_conf_t));
    if (conf == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&conf->prefix, "influencers");
    conf->connect_timeout = 500;
    conf->timeout = 200;

    if (ngx_http_influencers_redis_conf_address(cf, conf, &value[2])
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    fallback = 0;
    seen = 0;

    for (i = 3; i < cf->args->nelts; i++) {

        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (p == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" of "
                               "\"influencers_redis\": name=value is "
                               "expected", &value[i]);
            return NGX_CONF_ERROR;
        }

        name.data = value[i].data;
        name.len = p - value[i].data;
        s.data = p + 1;
        s.len = value[i].data + value[i].len - s.data;

        for (n = 0; ngx_http_influencers_redis_conf_params[n]; n++) {
            param = ngx_http_influencers_redis_conf_params[n];

            if (name.len == ngx_strlen(param)
                && ngx_strncmp(name.data, param, name.len) == 0)
            {
                break;
            }
        }

        if (ngx_http_influencers_redis_conf_params[n] == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V=...\" of "
                               "\"influencers_redis\"", &name);
            return NGX_CONF_ERROR;
        }

        if (seen & (1 << n)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V=\" is duplicate in "
                               "\"influencers_redis\"", &name);
            return NGX_CONF_ERROR;
        }

        seen |= 1 << n;

        switch (n) {

        case 0: /* password */
        case 1: /* user */
            if (s.len == 0 || s.len > 512) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V=\" of \"influencers_redis\":"
                                   " from 1 to 512 bytes", &name);
                return NGX_CONF_ERROR;
            }

            if (n == 0) {
                conf->password = s;

            } else {
                conf->user = s;
            }

            break;

        case 2: /* db */
            n = ngx_atoi(s.data, s.len);

            if (n == NGX_ERROR || n > 2147483647) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid db \"%V\": a number from 0 to "
                                   "2147483647", &s);
                return NGX_CONF_ERROR;
            }

            conf->db = (ngx_uint_t) n;
            conf->db_text = s;
            break;

        case 3: /* prefix */
            if (s.len == 0 || s.len > NGX_HTTP_INFLUENCERS_PREFIX_MAX) {
                goto invalid_prefix;
            }

            last = s.data + s.len;

            for (p = s.data; p < last; p++) {
                if (*p <= 0x20 || *p >= 0x7f) {
                    goto invalid_prefix;
                }
            }

            conf->prefix = s;
            break;

        case 4: /* connect_timeout */
            if (ngx_http_influencers_redis_conf_msec(cf, &name, &s,
                                                     &conf->connect_timeout)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            break;

        case 5: /* timeout */
            if (ngx_http_influencers_redis_conf_msec(cf, &name, &s,
                                                     &conf->timeout)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            break;

        default: /* on_error */
            if (s.len == 3 && ngx_strncmp(s.data, "503", 3) == 0) {
                fallback = 0;

            } else if (s.len == 5 && ngx_strncmp(s.data, "local", 5) == 0) {
                fallback = 1;

            } else {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid on_error \"%V\": \"503\" or "
                                   "\"local\" is expected", &s);
                return NGX_CONF_ERROR;
            }

            break;
        }
    }

    if (conf->user.len && conf->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"user=\" of \"influencers_redis\" needs "
                           "\"password=\"");
        return NGX_CONF_ERROR;
    }

    zone->redis = conf;

    if (fallback) {
        zone->fallback = 1;
    }

    return NGX_CONF_OK;

invalid_prefix:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid prefix \"%V\": from 1 to %d visible ASCII "
                       "characters, without spaces", &s,
                       NGX_HTTP_INFLUENCERS_PREFIX_MAX);
    return NGX_CONF_ERROR;
}


/*
 * host:port, with the host a literal address or a name resolved now, so
 * that no request ever waits on DNS; or unix:path.
 */

static char *
ngx_http_influencers_redis_conf_address(ngx_conf_t *cf,
    ngx_http_influencers_redis_conf_t *conf, ngx_str_t *value)
{
    size_t            len, max;
    ngx_url_t         u;
    struct sockaddr  *sa;

    conf->name = *value;

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

        conf->path = ngx_pnalloc(cf->pool, len + 1);
        if (conf->path == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(conf->path, value->data + 5, len);
        conf->path[len] = '\0';

        return NGX_CONF_OK;
    }

    if (ngx_strlchr(value->data, value->data + value->len, '=')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_redis\" needs the address of "
                           "Redis right after zone=: host:port or "
                           "unix:path");
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": %s", value,
                           u.err ? u.err : "cannot be parsed");
        return NGX_CONF_ERROR;
    }

    if (u.no_port || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis address \"%V\": host:port is "
                           "expected", value);
        return NGX_CONF_ERROR;
    }

    /* a name with several addresses: the first, as a client would */

    sa = u.addrs[0].sockaddr;

    conf->host = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (conf->host == NULL) {
        return NGX_CONF_ERROR;
    }

    len = ngx_sock_ntop(sa, u.addrs[0].socklen, conf->host,
                        NGX_SOCKADDR_STRLEN, 0);
    conf->host[len] = '\0';

    conf->port = ngx_inet_get_port(sa);

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
