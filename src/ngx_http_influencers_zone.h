
/*
 * Copyright (C) The influencers module authors.
 *
 * The shared-memory zone: every job of the gateway, and the idempotency
 * cache that points at them.
 */


#ifndef _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_


#include "ngx_http_influencers.h"


#define NGX_HTTP_INFLUENCERS_ZONE_MAGIC    0x5a464e49    /* "INFZ" */
#define NGX_HTTP_INFLUENCERS_ZONE_VERSION  2


/* the outcome of a claim */
#define NGX_HTTP_INFLUENCERS_CLAIM_NEW       0
#define NGX_HTTP_INFLUENCERS_CLAIM_REPLAY    1
#define NGX_HTTP_INFLUENCERS_CLAIM_BUSY      2
#define NGX_HTTP_INFLUENCERS_CLAIM_MISMATCH  3
#define NGX_HTTP_INFLUENCERS_CLAIM_FULL      4


typedef struct {
    uint64_t                      claims;
    uint64_t                      replays;
    uint64_t                      conflicts;
    uint64_t                      mismatches;
    uint64_t                      releases;
    uint64_t                      lease_expiries;
    uint64_t                      capacity;
    uint64_t                      accepted;
    uint64_t                      failed;
} ngx_http_influencers_counters_t;


struct ngx_http_influencers_zone_s {
    ngx_str_t                     name;
    ngx_shm_zone_t               *shm_zone;
    ngx_slab_pool_t              *shpool;
    struct ngx_http_influencers_shctx_s  *sh;
    ngx_msec_t                    ttl;
    ngx_msec_t                    lease;
    ngx_str_t                     state_file;
};


/* what a claim brings: the request's identity and a job to create */

typedef struct {
    u_char                       *idem;          /* NULL: no key */
    u_char                        key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        random[10 + 16];
    ngx_http_influencers_job_t   *job;
} ngx_http_influencers_claim_t;


typedef struct {
    ngx_uint_t                    records;
    ngx_uint_t                    free;
    ngx_uint_t                    keyed;
    ngx_uint_t                    inflight;
    size_t                        record_size;
    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_stats_t;


ngx_http_influencers_zone_t *ngx_http_influencers_zone_add(ngx_conf_t *cf,
    ngx_str_t *name, size_t size);
ngx_int_t ngx_http_influencers_zone_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log);
void ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_uint_t accepted,
    ngx_uint_t known);
void ngx_http_influencers_zone_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st);
char *ngx_http_influencers_zone_check_reload(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
void ngx_http_influencers_zone_save_all(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_ */
