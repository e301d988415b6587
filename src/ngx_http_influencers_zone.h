
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
#define NGX_HTTP_INFLUENCERS_ZONE_VERSION  5


/*
 * The zone and the state file keep the first 16 bytes of the key digest
 * and of the fingerprint.  Two of one org's keys colliding (a birthday
 * search of 2^64 digests) would only let that org answer itself a replay;
 * landing on another org's entry, whose key digest covers its org, is a
 * second preimage, 2^128.  By chance, a billion entries collide with a
 * probability under 10^-20.
 */

#define NGX_HTTP_INFLUENCERS_DIGEST_LEN    16


/* the outcome of a claim */
#define NGX_HTTP_INFLUENCERS_CLAIM_NEW       0
#define NGX_HTTP_INFLUENCERS_CLAIM_REPLAY    1
#define NGX_HTTP_INFLUENCERS_CLAIM_BUSY      2
#define NGX_HTTP_INFLUENCERS_CLAIM_MISMATCH  3
#define NGX_HTTP_INFLUENCERS_CLAIM_FULL      4
#define NGX_HTTP_INFLUENCERS_CLAIM_OVER_SHARE 5
#define NGX_HTTP_INFLUENCERS_CLAIM_RESEND    6  /* the key's job, again */


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
    uint64_t                      share;
    uint64_t                      resends;      /* a key's job sent again */
    uint64_t                      unknown;      /* outcomes in doubt */
    uint64_t                      kept;         /* failures of a job in
                                                   doubt: the key keeps it */

    /* fleet mode, counted outside the lock */
    ngx_atomic_t                  redis_ops;    /* round trips */
    ngx_atomic_t                  redis_failures;
    ngx_atomic_t                  redis_fallbacks;
    ngx_atomic_t                  redis_stale;  /* finishes refused */

    /* fleet mode: claims taken back (Redis refused or answered them) */
    uint64_t                      unclaimed;

    /* fleet mode: finishes owed to Redis, kept in the zone */
    uint64_t                      owed;         /* kept */
    uint64_t                      resent;       /* sent again from it */
    uint64_t                      abandoned;    /* expired unsent */
    uint64_t                      unkept;       /* no room to keep one */

    /* fleet mode: what Redis is */
    uint64_t                      redis_lost;   /* restarts without data */
    uint64_t                      redis_restarts;
    uint64_t                      redis_bad;    /* values refused */
} ngx_http_influencers_counters_t;


#define NGX_HTTP_INFLUENCERS_COUNT_OP        0
#define NGX_HTTP_INFLUENCERS_COUNT_FAILURE   1
#define NGX_HTTP_INFLUENCERS_COUNT_FALLBACK  2
#define NGX_HTTP_INFLUENCERS_COUNT_STALE     3
#define NGX_HTTP_INFLUENCERS_COUNT_BAD       4


struct ngx_http_influencers_zone_s {
    ngx_str_t                     name;
    ngx_shm_zone_t               *shm_zone;
    ngx_slab_pool_t              *shpool;
    struct ngx_http_influencers_shctx_s  *sh;
    ngx_msec_t                    ttl;
    ngx_msec_t                    lease;
    ngx_uint_t                    org_share;    /* percent of the records */
    ngx_str_t                     state_file;
    void                         *state;        /* this process's journal */

    /* fleet mode: the claims live in Redis, this zone is their cache */
    void                         *redis;
    ngx_uint_t                    fallback;     /* Redis down: zone alone */
};


/* what a claim brings: the request's identity and a job to create */

typedef struct {
    u_char                       *idem;          /* NULL: no key */
    u_char                        key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        random[10 + 16 + 16];   /* +token */
    u_char                       *request_id;   /* 16 bytes */
    uint64_t                      org_hash;
    uint64_t                      body;         /* the bytes' keyed hash */
    ngx_http_influencers_job_t   *job;
} ngx_http_influencers_claim_t;


typedef struct {
    ngx_uint_t                    records;
    ngx_uint_t                    free;
    ngx_uint_t                    keyed;
    ngx_uint_t                    inflight;
    ngx_uint_t                    orgs;
    ngx_uint_t                    largest_org;
    ngx_uint_t                    org_limit;
    size_t                        record_size;
    ngx_uint_t                    owing;        /* finishes not yet taken */
    ngx_uint_t                    owing_max;
    ngx_uint_t                    redis_unsafe; /* 1: can lose entries */
    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_stats_t;


/*
 * What the state file, the journal and Redis keep of an idempotency entry:
 * the job itself, so that a job in doubt is sent again as it was.
 */

#define NGX_HTTP_INFLUENCERS_ENTRY_DONE      1   /* accepted */
#define NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN   2   /* in doubt: the key keeps
                                                    its job */
#define NGX_HTTP_INFLUENCERS_ENTRY_RELEASED  3   /* the key was given back */

typedef struct {
    u_char                        key[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        job_id[16];
    u_char                        influencer_id[16];
    u_char                        request_id[16];
    uint64_t                      expires;      /* wall clock, ms */
    uint64_t                      org_hash;
    uint32_t                      retry_after;
    u_char                        state;
    u_char                        gender;
    u_char                        age_range;
    u_char                        reserved;
} ngx_http_influencers_entry_t;


/*
 * Fleet mode: a finish owed to Redis, kept in the zone until Redis has it,
 * so that no worker's death, reload or exit loses it.  What the finish
 * script is sent: the key, the outcome ('A' accepted, 'F' failed for sure,
 * 'U' unknown), the claim's token, the job, the accepted entry's value and
 * its lifetime.
 */

#define NGX_HTTP_INFLUENCERS_FINISH_VALUE_MAX  96

typedef struct {
    u_char                        key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    uint64_t                      org_hash;
    uint64_t                      expires;      /* wall ms: given up after */
    ngx_msec_t                    ttl;
    u_char                        token[16];
    u_char                        job_id[16];
    u_char                        value[NGX_HTTP_INFLUENCERS_FINISH_VALUE_MAX];
    uint32_t                      value_len;
    u_char                        outcome;
    u_char                        tries;
} ngx_http_influencers_finish_t;


/* which pending finish a send is, and whether it is still that one */

typedef struct {
    uint32_t                      no;           /* 0: none kept */
    uint32_t                      seq;
} ngx_http_influencers_finish_ref_t;


/* what Redis says of itself when a connection is made */

typedef struct {
    u_char                        run_id[40];   /* hex; zeros: not read */
    unsigned                      aof:1;
    unsigned                      noeviction:1;
} ngx_http_influencers_redis_info_t;


ngx_http_influencers_zone_t *ngx_http_influencers_zone_add(ngx_conf_t *cf,
    ngx_str_t *name, size_t size);
ngx_int_t ngx_http_influencers_zone_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log);
uint64_t ngx_http_influencers_zone_body_hash(ngx_http_influencers_zone_t *zone,
    u_char *prefix, size_t plen, u_char *body, size_t len);
ngx_uint_t ngx_http_influencers_zone_replay(ngx_http_influencers_zone_t *zone,
    u_char *key, uint64_t body, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log);
void ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_outcome_e outcome,
    ngx_uint_t cache, ngx_log_t *log);
void ngx_http_influencers_zone_abandon(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc);
void ngx_http_influencers_zone_adopt(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_entry_t *entry);
void ngx_http_influencers_zone_adopt_job(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_entry_t *entry);
void ngx_http_influencers_zone_forget(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc);
void ngx_http_influencers_zone_count(ngx_http_influencers_zone_t *zone,
    ngx_uint_t counter);

ngx_int_t ngx_http_influencers_zone_owe(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_t *fin, ngx_msec_t hold,
    ngx_http_influencers_finish_ref_t *ref);
void ngx_http_influencers_zone_paid(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_ref_t *ref);
void ngx_http_influencers_zone_unpaid(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_ref_t *ref);
ngx_uint_t ngx_http_influencers_zone_owed(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_t *fin, ngx_http_influencers_finish_ref_t *ref,
    ngx_uint_t max, ngx_msec_t hold, ngx_uint_t *dropped);
void ngx_http_influencers_zone_disown(ngx_http_influencers_zone_t *zone);
void ngx_http_influencers_zone_redis(ngx_http_influencers_zone_t *zone,
    ngx_str_t *name, ngx_http_influencers_redis_info_t *info,
    ngx_str_t *policy, ngx_log_t *log);
void ngx_http_influencers_zone_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st);
char *ngx_http_influencers_zone_check_reload(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
ngx_http_influencers_zone_t *ngx_http_influencers_zone_next(
    ngx_cycle_t *cycle, ngx_http_influencers_zone_t *prev);
uint64_t ngx_http_influencers_org_hash(u_char *org, size_t len);


/* the two calls the state file needs of the zone: every entry, one back */

typedef void (*ngx_http_influencers_entry_pt)(
    ngx_http_influencers_entry_t *entry, void *data);

ngx_uint_t ngx_http_influencers_zone_each(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_pt handler, void *data);

#define NGX_HTTP_INFLUENCERS_RESTORED   0
#define NGX_HTTP_INFLUENCERS_DUPLICATE  1
#define NGX_HTTP_INFLUENCERS_NO_ROOM    2
#define NGX_HTTP_INFLUENCERS_OVER_SHARE 3

ngx_uint_t ngx_http_influencers_zone_restore(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_entry_t *entry,
    ngx_uint_t limit);
ngx_int_t ngx_http_influencers_zone_check(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_t *entry);
ngx_uint_t ngx_http_influencers_zone_room(ngx_http_influencers_zone_t *zone);
uint64_t ngx_http_influencers_wall_ms(void);


#endif /* _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_ */
