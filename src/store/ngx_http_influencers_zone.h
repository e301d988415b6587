
/*
 * Copyright (C) The influencers module authors.
 *
 * The shared-memory zone: every job of the gateway, and the idempotency
 * cache that points at them.
 */


#ifndef _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_store_types.h"


/*
 * The magic names the shared memory's layout (a reload refuses a zone of
 * another), the version the records' and the state file's.
 */
#define NGX_HTTP_INFLUENCERS_ZONE_MAGIC    0x325a4e49    /* "INZ2" */
#define NGX_HTTP_INFLUENCERS_ZONE_VERSION  5


#define NGX_HTTP_INFLUENCERS_COUNT_OP        0
#define NGX_HTTP_INFLUENCERS_COUNT_FAILURE   1
#define NGX_HTTP_INFLUENCERS_COUNT_FALLBACK  2
#define NGX_HTTP_INFLUENCERS_COUNT_STALE     3
#define NGX_HTTP_INFLUENCERS_COUNT_BAD       4


/*
 * The journal is a ring of this many segment files, written in turn; a
 * segment is reused only once every entry in it has expired.
 */
#define NGX_HTTP_INFLUENCERS_SEGMENTS  16


/*
 * What the workers share of the journal: it lives in the zone, under its
 * lock, since a segment is chosen as the entry it records is changed.
 */

typedef struct {
    ngx_uint_t                    seq;          /* the segment written now */
    uint64_t                      started[NGX_HTTP_INFLUENCERS_SEGMENTS];
} ngx_http_influencers_journal_t;


/*
 * The zone's journal: the state file's functions, handed to the zone as
 * it is declared, so that the zone tells the file of every entry without
 * calling into it by name.
 */

typedef struct {
    ngx_int_t   (*open)(ngx_http_influencers_zone_t *zone,
                        ngx_http_influencers_zone_t *ozone, ngx_log_t *log);
    void        (*load)(ngx_http_influencers_zone_t *zone,
                        ngx_http_influencers_journal_t *journal,
                        ngx_log_t *log);
    ngx_int_t   (*rotate)(ngx_http_influencers_zone_t *zone,
                          ngx_http_influencers_journal_t *journal,
                          ngx_log_t *log);
    void        (*append)(ngx_http_influencers_zone_t *zone, ngx_uint_t seq,
                          ngx_http_influencers_entry_t *entry,
                          ngx_log_t *log);
} ngx_http_influencers_zone_journal_t;


/* who holds a key's claim: the zone, or Redis (the zone is its cache) */

typedef enum {
    NGX_HTTP_INFLUENCERS_ZONE_HOLDS = 0,
    NGX_HTTP_INFLUENCERS_REDIS_HOLDS
} ngx_http_influencers_zone_holder_e;


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
    const ngx_http_influencers_zone_journal_t  *journal;

    /* fleet mode: the claims live in Redis, this zone is their cache */
    void                         *redis;
    ngx_uint_t                    fallback;     /* Redis down: zone alone */
};


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
    u_char                        token[NGX_HTTP_INFLUENCERS_TOKEN_LEN];
    u_char                        job_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
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
ngx_http_influencers_store_e ngx_http_influencers_zone_claim(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log);
uint64_t ngx_http_influencers_zone_body_hash(ngx_http_influencers_zone_t *zone,
    u_char *prefix, size_t plen, u_char *body, size_t len);
ngx_http_influencers_store_e ngx_http_influencers_zone_replay(
    ngx_http_influencers_zone_t *zone, u_char *key, uint64_t body,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log);
void ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome,
    ngx_http_influencers_zone_holder_e holder, ngx_log_t *log);
void ngx_http_influencers_zone_abandon(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket);
void ngx_http_influencers_zone_adopt(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_entry_t *entry);
void ngx_http_influencers_zone_adopt_job(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_entry_t *entry);
void ngx_http_influencers_zone_forget(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket);
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
ngx_int_t ngx_http_influencers_zone_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st);
char *ngx_http_influencers_zone_check_reload(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
ngx_http_influencers_zone_t *ngx_http_influencers_zone_next(
    ngx_cycle_t *cycle, ngx_http_influencers_zone_t *prev);
uint64_t ngx_http_influencers_zone_org_hash(u_char *org, size_t len);


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
uint64_t ngx_http_influencers_zone_wall_ms(void);


#endif /* _NGX_HTTP_INFLUENCERS_ZONE_H_INCLUDED_ */
