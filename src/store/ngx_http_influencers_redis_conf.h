
/*
 * Copyright (C) The influencers module authors.
 *
 * The influencers_redis directive: where Redis is and how it is spoken
 * to, read once at configuration into the zone it makes a fleet's.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_


#include "ngx_http_influencers.h"


#define NGX_HTTP_INFLUENCERS_PREFIX_MAX       64


typedef struct {
    ngx_str_t                            name;      /* as configured */
    u_char                              *host;      /* numeric, or NULL */
    int                                  port;
    u_char                              *path;      /* unix:, or NULL */
    ngx_str_t                            user;
    ngx_str_t                            password;
    ngx_uint_t                           db;
    ngx_str_t                            db_text;
    ngx_str_t                            prefix;
    ngx_msec_t                           connect_timeout;
    ngx_msec_t                           timeout;

    struct ngx_http_influencers_redis_link_s  *link;  /* this worker's */
} ngx_http_influencers_redis_conf_t;


char *ngx_http_influencers_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_influencers_zone_t *zone);


#endif /* _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_ */
