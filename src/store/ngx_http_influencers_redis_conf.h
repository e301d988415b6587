
/*
 * Copyright (C) The influencers module authors.
 *
 * The influencers_redis directive: where Redis is and how it is spoken
 * to, read once at configuration into the zone it makes a fleet's.
 */


#ifndef _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_redis_io.h"


#define NGX_HTTP_INFLUENCERS_PREFIX_MAX       64
#define NGX_HTTP_INFLUENCERS_WAIT_MAX         16


typedef struct {
    ngx_str_t                            name;      /* as configured */
    ngx_http_influencers_redis_addr_t    addr;      /* without sentinels */

    /* Redis Cluster: the nodes the slot map is first asked of */
    ngx_array_t                         *cluster;   /* redis_addr_t */

    /* Sentinel: the master is asked of them, by name */
    ngx_array_t                         *sentinels; /* redis_addr_t */
    ngx_str_t                            master;
    ngx_str_t                            sentinel_user;
    ngx_str_t                            sentinel_password;

    ngx_str_t                            user;
    ngx_str_t                            password;
    ngx_uint_t                           db;
    ngx_str_t                            db_text;
    ngx_str_t                            prefix;
    ngx_msec_t                           timeout;

    /* WAIT for this many replicas after every write; 0: none */
    ngx_uint_t                           wait;
    u_char                               wait_text[NGX_INT_T_LEN];
    size_t                               wait_len;
    u_char                               wait_ms[NGX_INT_T_LEN];
    size_t                               wait_ms_len;

    ngx_http_influencers_redis_tls_t     tls;       /* and connect_timeout */

    struct ngx_http_influencers_redis_fleet_s  *fleet;  /* this worker's */
} ngx_http_influencers_redis_conf_t;


char *ngx_http_influencers_redis_conf_parse(ngx_conf_t *cf,
    ngx_http_influencers_zone_t *zone);


#endif /* _NGX_HTTP_INFLUENCERS_REDIS_CONF_H_INCLUDED_ */
