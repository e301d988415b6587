
/*
 * Copyright (C) The influencers module authors.
 *
 * What the module counts: the answers and forwards of every worker in a
 * small shared zone of its own, and the zones' counters as JSON
 * (influencers_stats) and in Prometheus's text format
 * (influencers_metrics).
 */


#ifndef _NGX_HTTP_INFLUENCERS_METRICS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_METRICS_H_INCLUDED_


#include "ngx_http_influencers.h"


/* influencers_forwards_total's outcomes: the first of the forward's */

#define NGX_HTTP_INFLUENCERS_FORWARD_OUTCOMES                                 \
    (NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN + 1)


typedef struct ngx_http_influencers_metrics_sh_s
    ngx_http_influencers_metrics_sh_t;


/* the module's main configuration: where this cycle counts */

typedef struct {
    ngx_shm_zone_t                     *shm_zone;
    ngx_http_influencers_metrics_sh_t  *sh;       /* NULL: nothing counted */
} ngx_http_influencers_main_conf_t;


void *ngx_http_influencers_metrics_create_main_conf(ngx_conf_t *cf);
ngx_int_t ngx_http_influencers_metrics_add(ngx_conf_t *cf);

void ngx_http_influencers_metrics_answer(ngx_http_request_t *r,
    ngx_uint_t answer);
void ngx_http_influencers_metrics_forward(ngx_http_request_t *r,
    ngx_http_influencers_forward_e outcome, ngx_msec_t ms);

/* the bodies of influencers_metrics and influencers_stats */
ngx_int_t ngx_http_influencers_metrics_prometheus(ngx_http_request_t *r,
    ngx_str_t *text);
ngx_int_t ngx_http_influencers_metrics_stats(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_str_t *json);


#endif /* _NGX_HTTP_INFLUENCERS_METRICS_H_INCLUDED_ */
