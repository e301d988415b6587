
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_siphash.h"


/*
 * Records have one fixed size and are all carved out of the zone, in one
 * array, when the zone is created, each with room for one org's count and
 * its slots in the two indexes: a request never allocates shared memory,
 * and how many jobs a zone holds is known in advance.  A record keeps only
 * what a replay, a lease and the state file need: the job itself is the
 * backend's once forwarded.  A record is in exactly one queue:
 *
 *   free      unused;
 *   inflight  being forwarded (a lease: deadline is the lease's end);
 *   keyed     accepted with an Idempotency-Key, or in doubt (its forward
 *             ended without an outcome, or its lease ran out: the key
 *             keeps its job, which a retry sends again); deadline is its
 *             expiry; in the key index too, never evicted before then;
 *   jobs      accepted without a key, failed, or lost: evictable, LRU;
 *             in fleet mode, finished entries too, cached from Redis,
 *             which holds them: still in the key index until evicted.
 *
 * An in-flight record with a key is in the key index as well.  A record
 * in flight or keyed is held by its org, and in its org's queue too: an
 * org may hold at most its share.
 *
 * The indexes are hash tables of 32-bit record numbers (one more than the
 * index, 0 ends a chain): a pointer and a tree node would be three times
 * the size.  The key digest's first 8 bytes pick a bucket through a
 * multiply by a random odd number drawn when the zone is made, so a
 * partner grinding keys cannot aim them at one bucket without knowing it.
 */

#define NGX_HTTP_INFLUENCERS_FREE       0
#define NGX_HTTP_INFLUENCERS_FORWARDING 1
#define NGX_HTTP_INFLUENCERS_DONE       2
#define NGX_HTTP_INFLUENCERS_FAILED     3
#define NGX_HTTP_INFLUENCERS_LOST       4
#define NGX_HTTP_INFLUENCERS_IN_DOUBT   5

/* the most records one request expires or looks at, under the lock */
#define NGX_HTTP_INFLUENCERS_EXPIRE_MAX 4
#define NGX_HTTP_INFLUENCERS_SWEEP_MAX  16

/* orgs are few: a bucket for every 4 records is plenty */
#define NGX_HTTP_INFLUENCERS_ORGS_PER_BUCKET  4


typedef struct {
    uint64_t                      hash;
    ngx_queue_t                   held;         /* its records, oldest last */
    uint32_t                      next;         /* in its bucket, or free */
    uint32_t                      nheld;
} ngx_http_influencers_org_t;


/*
 * A finish owed to Redis: on the owing list until Redis has it.  The
 * worker sending it owns it until due; unowned, it is sent by the first
 * worker whose timer finds it due.
 */

typedef struct {
    ngx_http_influencers_finish_t  fin;
    uint32_t                      next;         /* owing or free, from 1 */
    uint32_t                      prev;         /* owing: a paid finish
                                                   leaves at once, wherever
                                                   it stands */
    uint32_t                      seq;
    ngx_pid_t                     owner;
    ngx_msec_t                    due;
} ngx_http_influencers_owed_t;

/* a zone in fleet mode keeps a finish for every 16 records, 16 at least */
#define NGX_HTTP_INFLUENCERS_RECORDS_PER_OWED  16
#define NGX_HTTP_INFLUENCERS_OWED_MIN          16


typedef struct {
    ngx_queue_t                   queue;
    ngx_queue_t                   org_queue;
    uint32_t                      next;         /* in the key's bucket */
    uint32_t                      org;          /* 0: not held */
    u_char                        key[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        job_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    u_char                        influencer_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    /* the job's first request's */
    u_char                        request_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    ngx_msec_t                    deadline;
    uint64_t                      expires;      /* wall clock, ms */
    uint64_t                      body;         /* 0: not known here */
    uint32_t                      retry_after;
    u_char                        state;
    u_char                        keyed;
    u_char                        cached;       /* fleet: Redis holds it */
    u_char                        gender;
    u_char                        age_range;
    u_char                        attempt;      /* of the forwards */
    u_char                        in_doubt;     /* may have been sent: never
                                                   released again */
} ngx_http_influencers_zone_record_t;


typedef struct ngx_http_influencers_shctx_s {
    uint32_t                      magic;
    uint32_t                      version;
    size_t                        record_size;
    size_t                        zone_size;
    ngx_msec_t                    ttl;          /* the last cycle's */

    /* the records, their orgs' counts, and the two indexes */
    ngx_http_influencers_zone_record_t  *recs;
    ngx_http_influencers_org_t     *org_counts;
    uint32_t                     *buckets;
    uint32_t                     *org_buckets;
    uint32_t                      nbuckets;
    uint32_t                      norg_buckets;
    uint64_t                      mix;          /* odd, random */
    u_char                        body_key[16]; /* random */
    size_t                        footprint;    /* zone bytes per record */

    /* never used yet, from here on: a large zone starts without a pass */
    uint32_t                      fresh;
    uint32_t                      orgs_fresh;

    uint32_t                      orgs_free;    /* linked by next */
    ngx_uint_t                    norgs;

    /* how many orgs hold each number of records: the largest, exactly */
    uint32_t                     *orgs_holding;
    ngx_uint_t                    largest_org;

    ngx_queue_t                   free;
    ngx_queue_t                   inflight;
    ngx_queue_t                   keyed;
    ngx_queue_t                   jobs;

    ngx_uint_t                    records;
    ngx_uint_t                    nfree;
    ngx_uint_t                    nkeyed;
    ngx_uint_t                    ninflight;

    /* where the sweep of an unordered queue goes on from */
    ngx_http_influencers_zone_record_t  *swept_keyed;
    ngx_http_influencers_zone_record_t  *swept_inflight;

    /* ULIDs stay sorted across workers: the last one, under the lock */
    uint64_t                      ulid_ms;
    u_char                        ulid_rand[10];

    time_t                        full_logged;
    time_t                        share_logged;

    /* fleet mode: the finishes owed to Redis, none if zero */
    ngx_http_influencers_owed_t  *owed;
    uint32_t                      nowed;
    uint32_t                      owed_free;    /* linked by next */
    uint32_t                      owed_fresh;
    uint32_t                      owing;        /* the list's head */
    ngx_atomic_t                  nowing;       /* read without the lock */
    time_t                        unkept_logged;

    /* fleet mode: the Redis server last seen, and what it keeps */
    u_char                        redis_run_id[40];
    time_t                        redis_warned;
    ngx_uint_t                    redis_unsafe;

    ngx_http_influencers_journal_t   journal;
    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_shctx_t;


static ngx_int_t ngx_http_influencers_zone_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_uint_t ngx_http_influencers_zone_carve(ngx_slab_pool_t *shpool,
    ngx_http_influencers_shctx_t *sh, ngx_uint_t fleet, ngx_log_t *log);
static void ngx_http_influencers_zone_org_count(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_org_t *org,
    ngx_int_t delta);
static void ngx_http_influencers_zone_expire_org(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_org_t *org,
    ngx_msec_t now);
static ngx_http_influencers_store_e ngx_http_influencers_zone_found(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_log_t *log);
static void ngx_http_influencers_zone_doubt(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec);
static void ngx_http_influencers_zone_unqueue(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec);
static void ngx_http_influencers_zone_accept(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_zone_holder_e holder);
static ngx_http_influencers_zone_record_t *ngx_http_influencers_zone_lookup(
    ngx_http_influencers_shctx_t *sh, u_char *key);
static void ngx_http_influencers_zone_index(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec);
static ngx_http_influencers_org_t *ngx_http_influencers_zone_org_find(
    ngx_http_influencers_shctx_t *sh, uint64_t hash);
static ngx_http_influencers_org_t *ngx_http_influencers_zone_org_add(
    ngx_http_influencers_shctx_t *sh, uint64_t hash);
static void ngx_http_influencers_zone_hold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec, uint64_t hash);
static void ngx_http_influencers_zone_unhold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec);
static void ngx_http_influencers_zone_expire_oldest(
    ngx_http_influencers_shctx_t *sh, ngx_msec_t now);
static ngx_http_influencers_zone_record_t *ngx_http_influencers_zone_alloc(
    ngx_http_influencers_shctx_t *sh, ngx_msec_t now);
static ngx_http_influencers_zone_record_t *ngx_http_influencers_zone_take_free(
    ngx_http_influencers_shctx_t *sh);
static void ngx_http_influencers_zone_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_http_influencers_zone_record_t **cursor,
    ngx_msec_t now);
static ngx_uint_t ngx_http_influencers_zone_in_queue(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_zone_record_t *rec,
    ngx_queue_t *queue);
static ngx_uint_t ngx_http_influencers_zone_expire(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_zone_record_t *rec,
    ngx_msec_t now);
static void ngx_http_influencers_zone_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec);
static void ngx_http_influencers_zone_entry(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec,
        ngx_http_influencers_entry_t *entry);
static void ngx_http_influencers_zone_next_ulid(
    ngx_http_influencers_shctx_t *sh, u_char *random, u_char *out);
static void ngx_http_influencers_zone_fill(
    ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_claim_t *claim);
static void ngx_http_influencers_zone_answer(
    ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_store_ticket_t *ticket);
static void ngx_http_influencers_zone_owed_free(
    ngx_http_influencers_shctx_t *sh, uint32_t no);
static ngx_shm_zone_t *ngx_http_influencers_zone_next_zone(ngx_cycle_t *cycle,
    ngx_shm_zone_t *prev);


/* records and org counts are numbered from 1: 0 is none */

#define ngx_http_influencers_record_no(sh, rec)                               \
    ((uint32_t) ((rec) - (sh)->recs) + 1)
#define ngx_http_influencers_record_at(sh, no)                                \
    (&(sh)->recs[(no) - 1])
#define ngx_http_influencers_org_no(sh, org)                                  \
    ((uint32_t) ((org) - (sh)->org_counts) + 1)
#define ngx_http_influencers_org_at(sh, no)                                   \
    ((no) ? &(sh)->org_counts[(no) - 1] : NULL)

/* multiply-shift by the zone's odd number, then onto [0, n) */

static ngx_inline uint32_t
ngx_http_influencers_zone_mix(ngx_http_influencers_shctx_t *sh, uint64_t x,
    uint32_t n)
{
    return (uint32_t) ((((x * sh->mix) >> 32) * n) >> 32);
}


static ngx_inline uint32_t
ngx_http_influencers_zone_bucket(ngx_http_influencers_shctx_t *sh, u_char *key,
    uint32_t n)
{
    uint64_t  x;

    ngx_memcpy(&x, key, sizeof(uint64_t));

    return ngx_http_influencers_zone_mix(sh, x, n);
}


#define ngx_http_influencers_after(a, b)  ((ngx_msec_int_t) ((a) - (b)) >= 0)


static ngx_str_t  ngx_http_influencers_empty = ngx_null_string;


#if (NGX_DEBUG)

/* indexed by ngx_http_influencers_store_e, for the debug log */

static const char  *ngx_http_influencers_claim_names[] = {
    "new", "replay", "busy", "mismatch", "full", "over the org's share",
    "", "", "", "the key's job in doubt, sent again"
};

#endif


ngx_http_influencers_zone_t *
ngx_http_influencers_zone_add(ngx_conf_t *cf, ngx_str_t *name, size_t size)
{
    ngx_shm_zone_t               *shm_zone;
    ngx_http_influencers_zone_t  *zone;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    shm_zone = ngx_shared_memory_add(cf, name, size,
                                     &ngx_http_influencers_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "influencers zone \"%V\" is already declared",
                           name);
        return NULL;
    }

    zone->name = *name;
    zone->shm_zone = shm_zone;

    shm_zone->init = ngx_http_influencers_zone_init_zone;
    shm_zone->data = zone;

    return zone;
}


static ngx_int_t
ngx_http_influencers_zone_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_influencers_zone_t  *ozone = data;

    size_t                          len;
    ngx_slab_pool_t                *shpool;
    ngx_http_influencers_zone_t    *zone;
    ngx_http_influencers_shctx_t   *sh;

    zone = shm_zone->data;

    if (ozone) {
        /* a reload: the same memory, so the same layout, or nothing */

        sh = ozone->sh;

        if (sh->magic != NGX_HTTP_INFLUENCERS_ZONE_MAGIC
            || sh->version != NGX_HTTP_INFLUENCERS_ZONE_VERSION
            || sh->record_size != sizeof(ngx_http_influencers_zone_record_t))
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "influencers zone \"%V\" has another layout "
                          "(version %uD), restart nginx to recreate it",
                          &shm_zone->shm.name, sh->version);
            return NGX_ERROR;
        }

        zone->sh = sh;
        zone->shpool = ozone->shpool;
        sh->ttl = zone->ttl;

        return zone->journal->open(zone, ozone, shm_zone->shm.log);
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->shpool = shpool;
        zone->sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_influencers_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;

    sh->magic = NGX_HTTP_INFLUENCERS_ZONE_MAGIC;
    sh->version = NGX_HTTP_INFLUENCERS_ZONE_VERSION;
    sh->record_size = sizeof(ngx_http_influencers_zone_record_t);
    sh->zone_size = shm_zone->shm.size;
    sh->ttl = zone->ttl;

    ngx_queue_init(&sh->free);
    ngx_queue_init(&sh->inflight);
    ngx_queue_init(&sh->keyed);
    ngx_queue_init(&sh->jobs);

    len = sizeof(" in influencers zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in influencers zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* ngx_http_influencers_ids_random() logs its own failure */

    if (ngx_http_influencers_ids_random((u_char *) &sh->mix, sizeof(uint64_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sh->mix |= 1;

    if (ngx_http_influencers_ids_random(sh->body_key, sizeof(sh->body_key))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_influencers_zone_carve(shpool, sh, zone->redis != NULL,
                                        shm_zone->shm.log)
        == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "influencers zone \"%V\" is too small for one job",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool = shpool;

    if (zone->journal->open(zone, NULL, shm_zone->shm.log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    zone->journal->load(zone, &sh->journal, shm_zone->shm.log);

    return NGX_OK;
}


/*
 * Every record now, each with an org count beside it (an org holds at
 * least one record), its slots in the indexes, and a count of orgs for
 * every number of records an org may hold: running out later is a 503,
 * not a log line.  All in one allocation of whole pages, so that nothing
 * is lost to the slab's rounding.  The records and org counts are handed
 * out in order the first time, so creating a zone of gigabytes writes only
 * its indexes.
 */

static ngx_uint_t
ngx_http_influencers_zone_carve(ngx_slab_pool_t *shpool,
    ngx_http_influencers_shctx_t *sh, ngx_uint_t fleet, ngx_log_t *log)
{
    u_char      *p;
    size_t       per, size, avail, owed;
    uint32_t     n, nowed;
    ngx_uint_t   norg;

    shpool->log_nomem = 0;

    per = sizeof(ngx_http_influencers_zone_record_t)
          + sizeof(ngx_http_influencers_org_t)
          + sizeof(uint32_t)                           /* its bucket */
          + sizeof(uint32_t)                           /* its org's count */
          + sizeof(uint32_t) / NGX_HTTP_INFLUENCERS_ORGS_PER_BUCKET;

    if (fleet) {
        per += sizeof(ngx_http_influencers_owed_t)
               / NGX_HTTP_INFLUENCERS_RECORDS_PER_OWED;
    }

    /* the arrays one after another, each aligned, and a bucket rounded */

    avail = shpool->pfree * ngx_pagesize;
    size = 5 * NGX_ALIGNMENT + 2 * sizeof(uint32_t)
           + (fleet ? NGX_HTTP_INFLUENCERS_OWED_MIN
                      * sizeof(ngx_http_influencers_owed_t) : 0);

    if (avail <= size + per) {
        return 0;
    }

    n = (uint32_t) ngx_min((avail - size) / per, NGX_MAX_UINT32_VALUE / 2);

    for ( ;; ) {
        norg = n / NGX_HTTP_INFLUENCERS_ORGS_PER_BUCKET + 1;
        nowed = fleet ? ngx_max(n / NGX_HTTP_INFLUENCERS_RECORDS_PER_OWED,
                                NGX_HTTP_INFLUENCERS_OWED_MIN)
                      : 0;
        owed = ngx_align(nowed * sizeof(ngx_http_influencers_owed_t),
                         NGX_ALIGNMENT);

        size = owed
               + ngx_align(n * sizeof(ngx_http_influencers_zone_record_t),
                           NGX_ALIGNMENT)
               + ngx_align(n * sizeof(ngx_http_influencers_org_t),
                           NGX_ALIGNMENT)
               + ngx_align(n * sizeof(uint32_t), NGX_ALIGNMENT)
               + ngx_align(norg * sizeof(uint32_t), NGX_ALIGNMENT)
               + (n + 1) * sizeof(uint32_t);

        p = ngx_slab_alloc(shpool, size);

        if (p) {
            break;
        }

        if (n < 2) {
            return 0;
        }

        /* the pages are not all in one run: fewer */
        n -= n / 64 + 1;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers zone: %uD records in %uz bytes, %uz a record",
                   n, size, size / n);

    sh->owed = nowed ? (ngx_http_influencers_owed_t *) p : NULL;
    sh->nowed = nowed;
    p += owed;

    sh->recs = (ngx_http_influencers_zone_record_t *) p;
    p += ngx_align(n * sizeof(ngx_http_influencers_zone_record_t),
                   NGX_ALIGNMENT);

    sh->org_counts = (ngx_http_influencers_org_t *) p;
    p += ngx_align(n * sizeof(ngx_http_influencers_org_t), NGX_ALIGNMENT);

    sh->buckets = (uint32_t *) p;
    sh->nbuckets = n;
    p += ngx_align(n * sizeof(uint32_t), NGX_ALIGNMENT);

    sh->org_buckets = (uint32_t *) p;
    sh->norg_buckets = (uint32_t) norg;
    p += ngx_align(norg * sizeof(uint32_t), NGX_ALIGNMENT);

    sh->orgs_holding = (uint32_t *) p;

    ngx_memzero(sh->buckets, (u_char *) (sh->orgs_holding + n + 1)
                             - (u_char *) sh->buckets);

    sh->records = n;
    sh->nfree = n;

    /* what the zone spends on a record, everything else shared out */
    sh->footprint = sh->zone_size / n;

    return n;
}


/*
 * The one critical section of a request: look the key up, and either
 * answer from the entry or claim it, with a new job or, when the key's job
 * is in doubt, with that job again, atomically across workers.  The work
 * done here is bounded whatever the zone's size.
 */

ngx_http_influencers_store_e
ngx_http_influencers_zone_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log)
{
    ngx_int_t                       seq;
    ngx_http_influencers_store_e    rc;
    ngx_msec_t                      now;
    ngx_uint_t                      log_full, log_share, limit;
    ngx_http_influencers_entry_t    entry;
    ngx_http_influencers_org_t     *org;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    now = ngx_current_msec;
    log_full = 0;
    log_share = 0;
    seq = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_influencers_zone_expire_oldest(sh, now);

    if (claim->idem) {
        rec = ngx_http_influencers_zone_lookup(sh, claim->idem);

        if (rec && ngx_http_influencers_zone_expire(sh, rec, now)
            && !rec->keyed)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "influencers zone \"%V\": the key's entry had "
                           "expired", &zone->name);
            rec = NULL;
        }

        if (rec) {
            rc = ngx_http_influencers_zone_found(zone, rec, claim, ticket, log);
            goto done;
        }
    }

    /* no org holds more than its share, so none can lock another out */

    limit = ngx_max(1, sh->records * zone->org_share / 100);
    org = ngx_http_influencers_zone_org_find(sh, claim->org_hash);

    if (org && org->nheld >= limit) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": the org holds %uD of %ui "
                       "records, expiring its oldest", &zone->name,
                       org->nheld, limit);

        /* its own expired entries first, wherever the others' are */
        ngx_http_influencers_zone_expire_org(sh, org, now);
        org = ngx_http_influencers_zone_org_find(sh, claim->org_hash);
    }

    /* a share of the whole zone is no share: a full zone is a full zone */

    if (org && org->nheld >= limit && limit < sh->records) {
        sh->counters.share++;

        if (sh->share_logged != ngx_time() / 60) {
            sh->share_logged = ngx_time() / 60;
            log_share = 1;
        }

        rc = NGX_HTTP_INFLUENCERS_STORE_OVER_SHARE;
        goto done;
    }

    rec = ngx_http_influencers_zone_alloc(sh, now);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": %s, %ui free, %ui in flight",
                   &zone->name, rec ? "a record taken" : "no record free",
                   sh->nfree, sh->ninflight);

    if (rec == NULL) {
        sh->counters.capacity++;

        if (sh->full_logged != ngx_time() / 60) {
            sh->full_logged = ngx_time() / 60;
            log_full = 1;
        }

        rc = NGX_HTTP_INFLUENCERS_STORE_FULL;
        goto done;
    }

    /* write the record, then publish it */

    ngx_http_influencers_zone_fill(rec, claim);
    ngx_http_influencers_zone_next_ulid(sh, claim->random.ulid, rec->job_id);
    ngx_memcpy(rec->influencer_id, claim->random.influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    rec->retry_after = (uint32_t) ticket->retry_after;
    rec->deadline = now + zone->lease;
    rec->expires = 0;
    rec->attempt = 1;
    rec->in_doubt = 0;
    rec->state = NGX_HTTP_INFLUENCERS_FORWARDING;

    ngx_queue_insert_head(&sh->inflight, &rec->queue);
    sh->ninflight++;

    ngx_http_influencers_zone_hold(sh, rec, claim->org_hash);

    if (claim->idem) {
        ngx_http_influencers_zone_index(sh, rec);

        /*
         * Alone, the zone is where the key's job lives: should every
         * process die before its forward ends, the job is in doubt, and
         * read back as such.
         */

        if (zone->redis == NULL) {
            seq = zone->journal->rotate(zone, &sh->journal, log);

            if (seq != NGX_DECLINED) {
                ngx_http_influencers_zone_entry(sh, rec, &entry);
                entry.state = NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN;
                entry.expires = ngx_http_influencers_zone_wall_ms() + zone->ttl;
            }
        }
    }

    sh->counters.claims++;

    ngx_http_influencers_zone_answer(rec, ticket);
    ticket->attempt = rec->attempt;
    ticket->resend = 0;

    rc = NGX_HTTP_INFLUENCERS_STORE_NEW;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": claim %s: %s",
                   &zone->name, claim->idem ? "with a key" : "without a key",
                   ngx_http_influencers_claim_names[rc]);

    if (seq != NGX_DECLINED) {
        zone->journal->append(zone, seq, &entry, log);
    }

    if (log_full) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\" is full: unexpired "
                      "idempotency entries and jobs in flight fill all %ui "
                      "records, answering 503 (logged once a minute)",
                      &zone->name, sh->records);
    }

    if (log_share) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\": an org holds its whole share "
                      "of %ui records, answering it 503 while other orgs "
                      "are served (logged once a minute)",
                      &zone->name, limit);
    }

    return rc;
}


/*
 * The key has an entry: another request's (422), one being forwarded
 * (409), an accepted one (a replay), or a job in doubt, whose claim this
 * request takes over to send the job again.  Under the lock.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_zone_found(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_zone_record_t *rec,
        ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log)
{
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": the key has an entry, %s, "
                   "state %d", &zone->name,
                   ngx_memcmp(rec->fingerprint, claim->fingerprint,
                              NGX_HTTP_INFLUENCERS_DIGEST_LEN)
                   ? "another request's" : "this request's",
                   (int) rec->state);

    if (ngx_memcmp(rec->fingerprint, claim->fingerprint,
                   NGX_HTTP_INFLUENCERS_DIGEST_LEN)
        != 0)
    {
        sh->counters.mismatches++;
        return NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
    }

    switch (rec->state) {

    case NGX_HTTP_INFLUENCERS_FORWARDING:
        sh->counters.conflicts++;
        return NGX_HTTP_INFLUENCERS_STORE_BUSY;

    case NGX_HTTP_INFLUENCERS_IN_DOUBT:
        break;

    default: /* NGX_HTTP_INFLUENCERS_DONE */
        sh->counters.replays++;
        ngx_http_influencers_zone_answer(rec, ticket);
        return NGX_HTTP_INFLUENCERS_STORE_REPLAY;
    }

    /* the key's job, sent again under a lease of this request's */

    ngx_queue_remove(&rec->queue);

    if (rec->cached) {
        rec->cached = 0;

    } else {
        sh->nkeyed--;
    }

    if (rec->org == 0) {
        ngx_http_influencers_zone_hold(sh, rec, claim->org_hash);
    }

    rec->state = NGX_HTTP_INFLUENCERS_FORWARDING;
    rec->deadline = ngx_current_msec + zone->lease;
    rec->attempt++;

    ngx_queue_insert_head(&sh->inflight, &rec->queue);
    sh->ninflight++;
    sh->counters.resends++;

    ngx_http_influencers_zone_answer(rec, ticket);
    ticket->attempt = rec->attempt;
    ticket->resend = 1;
    ticket->expires = 0;
    ticket->expires_ms = 0;

    return NGX_HTTP_INFLUENCERS_STORE_RESEND;
}


/*
 * A retry of an accepted request, recognised before its body is parsed:
 * a keyed hash of what the body was checked against (the configuration,
 * the project) and of its bytes.  Equal bytes under the same configuration
 * validate as they did, to the same fingerprint, so the entry's answer is
 * theirs.  Anything else (another body, an entry read back from disk or
 * another node's, a reload since) is not recognised, and goes the whole
 * way: parse, validation, fingerprint, claim.  The key is the zone's, so
 * nobody can make two bodies' hashes meet on purpose.
 */

uint64_t
ngx_http_influencers_zone_body_hash(ngx_http_influencers_zone_t *zone,
    u_char *prefix, size_t plen, u_char *body, size_t len)
{
    uint64_t  h;

    h = ngx_http_influencers_siphash(zone->sh->body_key, prefix, plen, body,
                                     len);

    return h ? h : 1;
}


ngx_http_influencers_store_e
ngx_http_influencers_zone_replay(ngx_http_influencers_zone_t *zone,
    u_char *key, uint64_t body, ngx_http_influencers_store_ticket_t *ticket,
    ngx_log_t *log)
{
    ngx_uint_t                      found;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    found = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    rec = ngx_http_influencers_zone_lookup(sh, key);

    if (rec && rec->body == body && rec->state == NGX_HTTP_INFLUENCERS_DONE
        && !ngx_http_influencers_after(ngx_current_msec, rec->deadline))
    {
        sh->counters.replays++;
        ngx_http_influencers_zone_answer(rec, ticket);
        found = 1;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": %s", &zone->name,
                   found ? "a retry of the same bytes, replayed"
                         : "not a retry of the same bytes");

    return found ? NGX_HTTP_INFLUENCERS_STORE_REPLAY
                 : NGX_HTTP_INFLUENCERS_STORE_NOT_FOUND;
}


/*
 * The forward's outcome.  Accepted: remembered, whichever of the job's
 * forwards it comes from.  Failed for sure (nothing was sent, or the
 * backend answered): the key is released, unless the job may have reached
 * the backend before, by an earlier forward.  Unknown: the key keeps its
 * job, in doubt, for a retry to send again.  A failure or a doubt counts
 * only while its claim is the job's latest: another forward of the job
 * may be running.
 */

void
ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome,
    ngx_http_influencers_zone_holder_e holder, ngx_log_t *log)
{
    ngx_int_t                       seq;
    ngx_uint_t                      state;
    ngx_http_influencers_entry_t    entry;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    rec = ticket->record;
    seq = NGX_DECLINED;
    state = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* the record may hold another job by now, once this one's expired */

    if (rec->state == NGX_HTTP_INFLUENCERS_FREE
        || ngx_memcmp(rec->job_id, ticket->job_id,
                      NGX_HTTP_INFLUENCERS_ID_BYTES) != 0)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": finish of a job no longer "
                       "in the zone: nothing recorded", &zone->name);
        goto done;
    }

    if (outcome == NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED) {

        if (rec->state == NGX_HTTP_INFLUENCERS_DONE) {
            /* another forward of the job was accepted first */
            ticket->landed = 1;
            ngx_http_influencers_zone_answer(rec, ticket);
            goto done;
        }

        ngx_http_influencers_zone_unqueue(sh, rec);
        ngx_http_influencers_zone_accept(zone, rec, ticket, holder);
        ticket->landed = 1;

        if (rec->keyed && !rec->cached) {
            state = NGX_HTTP_INFLUENCERS_ENTRY_DONE;
        }

        goto done;
    }

    if (ngx_http_influencers_forward_failed(outcome)) {
        sh->counters.failed++;

    } else {
        sh->counters.unknown++;
    }

    if (rec->state != NGX_HTTP_INFLUENCERS_FORWARDING
        || rec->attempt != (u_char) ticket->attempt)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": the job's state %d "
                       "stands", &zone->name, (int) rec->state);

        if (rec->state == NGX_HTTP_INFLUENCERS_DONE) {
            ticket->landed = 1;
            ngx_http_influencers_zone_answer(rec, ticket);
        }

        goto done;
    }

    ngx_queue_remove(&rec->queue);
    sh->ninflight--;

    if (rec->keyed
        && (ngx_http_influencers_forward_in_doubt(outcome) || rec->in_doubt))
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": %s: the key keeps its job",
                       &zone->name,
                       ngx_http_influencers_forward_in_doubt(outcome)
                       ? "outcome unknown"
                       : "failed, but an earlier forward may have landed");

        if (ngx_http_influencers_forward_failed(outcome)) {
            sh->counters.kept++;
        }

        ngx_http_influencers_zone_doubt(sh, rec);

        if (holder == NGX_HTTP_INFLUENCERS_REDIS_HOLDS) {
            /* here it is a cache entry */
            ngx_queue_remove(&rec->queue);
            sh->nkeyed--;
            rec->cached = 1;
            ngx_http_influencers_zone_unhold(sh, rec);
            ngx_queue_insert_head(&sh->jobs, &rec->queue);
        }

        goto done;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": %s",
                   &zone->name,
                   ngx_http_influencers_forward_in_doubt(outcome)
                   ? "outcome unknown, no key" : "failed, the key released");

    rec->state = ngx_http_influencers_forward_in_doubt(outcome)
                 ? NGX_HTTP_INFLUENCERS_LOST : NGX_HTTP_INFLUENCERS_FAILED;

    if (rec->keyed) {
        sh->counters.releases++;

        if (holder == NGX_HTTP_INFLUENCERS_ZONE_HOLDS) {
            state = NGX_HTTP_INFLUENCERS_ENTRY_RELEASED;
            ngx_http_influencers_zone_entry(sh, rec, &entry);
        }

        ngx_http_influencers_zone_unkey(sh, rec);
    }

    ngx_http_influencers_zone_unhold(sh, rec);
    ngx_queue_insert_head(&sh->jobs, &rec->queue);

done:

    if (state) {
        seq = zone->journal->rotate(zone, &sh->journal, log);

        if (seq != NGX_DECLINED) {
            if (state != NGX_HTTP_INFLUENCERS_ENTRY_RELEASED) {
                ngx_http_influencers_zone_entry(sh, rec, &entry);
            }

            entry.state = (u_char) state;
            entry.expires = ngx_http_influencers_zone_wall_ms() + zone->ttl;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    /* on disk before the partner hears of it */

    if (seq != NGX_DECLINED) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": to the journal's segment %i",
                       &zone->name, seq);

        zone->journal->append(zone, seq, &entry, log);
    }
}


/* out of the queue a record of a job is in, whichever it is */

static void
ngx_http_influencers_zone_unqueue(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec)
{
    ngx_queue_remove(&rec->queue);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING) {
        sh->ninflight--;

    } else if (rec->state == NGX_HTTP_INFLUENCERS_IN_DOUBT && !rec->cached) {
        sh->nkeyed--;
    }
}


/* an accepted job: a keyed entry until it expires, else an evictable job */

static void
ngx_http_influencers_zone_accept(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_zone_holder_e holder)
{
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    sh->counters.accepted++;
    rec->state = NGX_HTTP_INFLUENCERS_DONE;
    rec->cached = 0;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": finish: accepted, %s%s",
                   &zone->name, rec->keyed ? "keyed" : "no key",
                   (rec->keyed && holder == NGX_HTTP_INFLUENCERS_REDIS_HOLDS)
                   ? ", cached" : "");

    if (!rec->keyed) {
        ngx_http_influencers_zone_unhold(sh, rec);
        ngx_queue_insert_head(&sh->jobs, &rec->queue);
        return;
    }

    rec->deadline = ngx_current_msec + zone->ttl;
    rec->expires = ngx_http_influencers_zone_wall_ms() + zone->ttl;
    ticket->expires = (time_t) (rec->expires / 1000);
    ticket->expires_ms = rec->expires;

    if (holder == NGX_HTTP_INFLUENCERS_REDIS_HOLDS) {
        /* here it is a cache entry, evictable */
        rec->cached = 1;
        ngx_http_influencers_zone_unhold(sh, rec);
        ngx_queue_insert_head(&sh->jobs, &rec->queue);
        return;
    }

    ngx_queue_insert_head(&sh->keyed, &rec->queue);
    sh->nkeyed++;

    /* its org's newest too: the org's oldest expire first */

    if (rec->org) {
        ngx_queue_remove(&rec->org_queue);
        ngx_queue_insert_head(&ngx_http_influencers_org_at(sh, rec->org)->held,
                              &rec->org_queue);
    }
}


/*
 * A keyed job that may have reached the backend, and whose forward is
 * over: the key keeps it, for the ttl, and a retry sends it again.  The
 * record is in no queue.
 */

static void
ngx_http_influencers_zone_doubt(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec)
{
    rec->state = NGX_HTTP_INFLUENCERS_IN_DOUBT;
    rec->in_doubt = 1;
    rec->deadline = ngx_current_msec + sh->ttl;
    rec->expires = ngx_http_influencers_zone_wall_ms() + sh->ttl;

    ngx_queue_insert_head(&sh->keyed, &rec->queue);
    sh->nkeyed++;

    if (rec->org) {
        ngx_queue_remove(&rec->org_queue);
        ngx_queue_insert_head(&ngx_http_influencers_org_at(sh, rec->org)->held,
                              &rec->org_queue);
    }
}


/*
 * Fleet mode: Redis refused the claim (in flight or another request on
 * another node) or could not be asked.  The zone's claim goes, unseen.
 */

void
ngx_http_influencers_zone_abandon(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    rec = ticket->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": claim abandoned%s",
                   &zone->name,
                   rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
                   ? "" : ", its lease had run out");

    if (rec->state != NGX_HTTP_INFLUENCERS_FORWARDING
        || rec->attempt != (u_char) ticket->attempt
        || ngx_memcmp(rec->job_id, ticket->job_id,
                      NGX_HTTP_INFLUENCERS_ID_BYTES) != 0)
    {
        goto done;
    }

    ngx_queue_remove(&rec->queue);
    sh->ninflight--;

    if (ticket->resend) {
        /* the key's job stays in doubt: Redis has the say, cached here */
        ngx_http_influencers_zone_doubt(sh, rec);
        ngx_queue_remove(&rec->queue);
        sh->nkeyed--;
        rec->cached = 1;
        ngx_http_influencers_zone_unhold(sh, rec);
        ngx_queue_insert_head(&sh->jobs, &rec->queue);
        goto done;
    }

    sh->counters.claims--;
    sh->counters.unclaimed++;

    ngx_http_influencers_zone_unkey(sh, rec);
    ngx_http_influencers_zone_unhold(sh, rec);

    rec->state = NGX_HTTP_INFLUENCERS_FREE;
    ngx_queue_insert_head(&sh->free, &rec->queue);
    sh->nfree++;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * Fleet mode: another node accepted the key.  Its entry replaces the
 * zone's claim, cached, so that this node replays it from now on.
 */

void
ngx_http_influencers_zone_adopt(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_entry_t *entry)
{
    uint64_t                        now_ms;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    rec = ticket->record;
    now_ms = ngx_http_influencers_zone_wall_ms();

    /* like an entry read from a file: never longer than the ttl now */
    entry->expires = ngx_min(entry->expires, now_ms + zone->ttl);

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (!ticket->resend) {
        sh->counters.claims--;
        sh->counters.unclaimed++;
    }

    sh->counters.replays++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": another node's entry adopted",
                   &zone->name);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
        && rec->attempt == (u_char) ticket->attempt
        && ngx_memcmp(rec->job_id, ticket->job_id,
                      NGX_HTTP_INFLUENCERS_ID_BYTES) == 0)
    {
        ngx_queue_remove(&rec->queue);
        sh->ninflight--;
        ngx_http_influencers_zone_unhold(sh, rec);

        ngx_memcpy(rec->job_id, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(rec->influencer_id, entry->influencer_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        rec->retry_after = entry->retry_after;
        rec->expires = entry->expires;
        rec->deadline = ngx_current_msec
                        + (ngx_msec_t) (entry->expires > now_ms
                                        ? entry->expires - now_ms : 0);
        rec->state = NGX_HTTP_INFLUENCERS_DONE;
        rec->cached = 1;

        ngx_queue_insert_head(&sh->jobs, &rec->queue);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_memcpy(ticket->job_id, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(ticket->influencer_id, entry->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ticket->retry_after = entry->retry_after;
    ticket->expires = (time_t) (entry->expires / 1000);
    ticket->expires_ms = entry->expires;
}


/*
 * Fleet mode: Redis holds the key's job in doubt (a forward elsewhere
 * ended without an outcome, or its lease ran out) and gave this node's
 * claim its lease.  The zone's claim takes that job over, to send it
 * again as it was.
 */

void
ngx_http_influencers_zone_adopt_job(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_entry_t *entry)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    rec = ticket->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (!ticket->resend) {
        sh->counters.claims--;
        sh->counters.unclaimed++;
        sh->counters.resends++;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": the fleet's job in doubt "
                   "taken over", &zone->name);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
        && rec->attempt == (u_char) ticket->attempt
        && ngx_memcmp(rec->job_id, ticket->job_id,
                      NGX_HTTP_INFLUENCERS_ID_BYTES) == 0)
    {
        ngx_memcpy(rec->job_id, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(rec->influencer_id, entry->influencer_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(rec->request_id, entry->request_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        rec->gender = entry->gender;
        rec->age_range = entry->age_range;
        rec->retry_after = entry->retry_after;
        rec->in_doubt = 1;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_memcpy(ticket->job_id, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(ticket->influencer_id, entry->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(ticket->request_id, entry->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ticket->gender = entry->gender;
    ticket->age_range = entry->age_range;
    ticket->retry_after = entry->retry_after;
    ticket->resend = 1;
}


/*
 * Fleet mode: Redis refused a finish, the claim there had run out and may
 * be another node's now.  This node's cache entry goes: Redis answers.
 */

void
ngx_http_influencers_zone_forget(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    rec = ticket->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (rec->cached
        && ngx_memcmp(rec->job_id, ticket->job_id,
                      NGX_HTTP_INFLUENCERS_ID_BYTES)
           == 0)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "influencers zone \"%V\": cache entry forgotten",
                       &zone->name);

        ngx_http_influencers_zone_unkey(sh, rec);
        rec->cached = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


void
ngx_http_influencers_zone_count(ngx_http_influencers_zone_t *zone,
    ngx_uint_t counter)
{
    ngx_atomic_t                  *n;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    switch (counter) {

    case NGX_HTTP_INFLUENCERS_COUNT_OP:
        n = &sh->counters.redis_ops;
        break;

    case NGX_HTTP_INFLUENCERS_COUNT_FAILURE:
        n = &sh->counters.redis_failures;
        break;

    case NGX_HTTP_INFLUENCERS_COUNT_FALLBACK:
        n = &sh->counters.redis_fallbacks;
        break;

    case NGX_HTTP_INFLUENCERS_COUNT_STALE:
        n = &sh->counters.redis_stale;
        break;

    default: /* NGX_HTTP_INFLUENCERS_COUNT_BAD */
        ngx_shmtx_lock(&zone->shpool->mutex);
        sh->counters.redis_bad++;
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    (void) ngx_atomic_fetch_add(n, 1);
}


/*
 * Fleet mode: a connection to Redis read what Redis is.  A Redis that
 * can lose the module's keys is said once a minute per zone, and a Redis
 * that came back as another process (a new run_id) without a journal to
 * reload lost every entry it held: said, and counted.
 */

void
ngx_http_influencers_zone_redis(ngx_http_influencers_zone_t *zone,
    ngx_str_t *name, ngx_http_influencers_redis_info_t *info,
    ngx_str_t *policy, ngx_log_t *log)
{
    ngx_uint_t                     restarted, warn;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;
    restarted = 0;
    warn = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (info->run_id[0]) {
        if (sh->redis_run_id[0]
            && ngx_memcmp(sh->redis_run_id, info->run_id, 40) != 0)
        {
            restarted = 1;
            sh->counters.redis_restarts++;

            if (!info->aof) {
                sh->counters.redis_lost++;
            }
        }

        ngx_memcpy(sh->redis_run_id, info->run_id, 40);
    }

    sh->redis_unsafe = !(info->aof && info->noeviction);

    if (sh->redis_unsafe && sh->redis_warned != ngx_time() / 60) {
        sh->redis_warned = ngx_time() / 60;
        warn = 1;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (restarted && !info->aof) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "influencers zone \"%V\": Redis at %V restarted "
                      "without its data (a new run_id, no AOF): every entry "
                      "it held is lost, and a retry of a key accepted before "
                      "may create a second job", &zone->name, name);

    } else if (restarted) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "influencers zone \"%V\": Redis at %V restarted or "
                      "was replaced (a new run_id); it reloads its AOF",
                      &zone->name, name);
    }

    if (warn) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\": Redis at %V can lose "
                      "entries it acknowledged%s%s%V%s: a lost entry lets a "
                      "retry create a second job; run it with \"appendonly "
                      "yes\", \"appendfsync everysec\" and "
                      "\"maxmemory-policy noeviction\" (logged once a "
                      "minute)", &zone->name, name,
                      info->aof ? "" : ", without AOF",
                      info->noeviction ? "" : ", with maxmemory-policy \"",
                      info->noeviction ? &ngx_http_influencers_empty : policy,
                      info->noeviction ? "" : "\"");
    }
}


/*
 * Fleet mode: a finish is kept before it is sent, owned by this worker
 * for hold (the time its reply may take); NGX_DECLINED when the zone has
 * no room left for one (counted, logged once a minute): it is then sent
 * once, unkept.
 */

ngx_int_t
ngx_http_influencers_zone_owe(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_t *fin, ngx_msec_t hold,
    ngx_http_influencers_finish_ref_t *ref)
{
    uint32_t                       no;
    ngx_uint_t                     log_unkept;
    ngx_http_influencers_owed_t   *o;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;
    ref->no = 0;
    log_unkept = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (sh->owed_free) {
        no = sh->owed_free;
        o = &sh->owed[no - 1];
        sh->owed_free = o->next;

    } else if (sh->owed_fresh < sh->nowed) {
        no = ++sh->owed_fresh;
        o = &sh->owed[no - 1];
        o->seq = 0;

    } else {
        sh->counters.unkept++;

        if (sh->unkept_logged != ngx_time() / 60) {
            sh->unkept_logged = ngx_time() / 60;
            log_unkept = 1;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (log_unkept && sh->nowed == 0) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "influencers zone \"%V\" was made without "
                          "\"influencers_redis\" and keeps no finish owed "
                          "to Redis: each is sent once, and lost if that "
                          "fails; restart nginx to make it anew (logged "
                          "once a minute)", &zone->name);

        } else if (log_unkept) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "influencers zone \"%V\": no room to keep a "
                          "finish owed to Redis, %uD are: it is sent once, "
                          "and lost if that fails (logged once a minute)",
                          &zone->name, sh->nowed);
        }

        return NGX_DECLINED;
    }

    o->fin = *fin;
    o->fin.tries = 0;
    o->seq++;
    o->owner = ngx_pid;
    o->due = ngx_current_msec + hold;
    o->prev = 0;
    o->next = sh->owing;

    if (sh->owing) {
        sh->owed[sh->owing - 1].prev = no;
    }

    sh->owing = no;
    sh->counters.owed++;

    (void) ngx_atomic_fetch_add(&sh->nowing, 1);

    ref->no = no;
    ref->seq = o->seq;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/* off the owing list, onto the free one; under the lock */

static void
ngx_http_influencers_zone_owed_free(ngx_http_influencers_shctx_t *sh,
    uint32_t no)
{
    ngx_http_influencers_owed_t  *o;

    o = &sh->owed[no - 1];

    if (o->prev) {
        sh->owed[o->prev - 1].next = o->next;

    } else {
        sh->owing = o->next;
    }

    if (o->next) {
        sh->owed[o->next - 1].prev = o->prev;
    }

    o->next = sh->owed_free;
    o->prev = 0;
    o->owner = NGX_INVALID_PID;
    o->seq++;
    sh->owed_free = no;

    (void) ngx_atomic_fetch_add(&sh->nowing, -1);
}


/* Redis has it (or refused it for good): no longer owed */

void
ngx_http_influencers_zone_paid(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_ref_t *ref)
{
    ngx_http_influencers_owed_t   *o;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    if (ref->no == 0) {
        return;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    o = &sh->owed[ref->no - 1];

    if (o->seq == ref->seq && o->owner != NGX_INVALID_PID) {
        ngx_http_influencers_zone_owed_free(sh, ref->no);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ref->no = 0;
}


/* not taken: any worker sends it again once its backoff ends */

void
ngx_http_influencers_zone_unpaid(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_ref_t *ref)
{
    ngx_msec_t                     delay;
    ngx_http_influencers_owed_t   *o;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    if (ref->no == 0) {
        return;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    o = &sh->owed[ref->no - 1];

    if (o->seq == ref->seq && o->owner != NGX_INVALID_PID) {
        if (o->fin.tries < 255) {
            o->fin.tries++;
        }

        /* 250 ms, doubled at each try, up to 8 s */
        delay = (ngx_msec_t) 250 << ngx_min(o->fin.tries - 1, 5);

        o->owner = 0;
        o->due = ngx_current_msec + delay;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ref->no = 0;
}


/*
 * The timer's share: up to max finishes that are due and that no live
 * send owns, taken for hold.  Those whose entry has expired meanwhile are
 * given up (counted in *dropped).  Cheap when nothing is owed: one read.
 */

ngx_uint_t
ngx_http_influencers_zone_owed(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_finish_t *fin, ngx_http_influencers_finish_ref_t *ref,
    ngx_uint_t max, ngx_msec_t hold, ngx_uint_t *dropped)
{
    uint32_t                       no, next;
    uint64_t                       now_ms;
    ngx_uint_t                     n;
    ngx_msec_t                     now;
    ngx_http_influencers_owed_t   *o;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;
    n = 0;
    *dropped = 0;

    if (sh->nowing == 0) {
        return 0;
    }

    now = ngx_current_msec;
    now_ms = ngx_http_influencers_zone_wall_ms();

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (no = sh->owing; no && n < max; no = next) {
        o = &sh->owed[no - 1];
        next = o->next;

        if (o->fin.expires <= now_ms) {
            ngx_http_influencers_zone_owed_free(sh, no);
            sh->counters.abandoned++;
            (*dropped)++;
            continue;
        }

        if (!ngx_http_influencers_after(now, o->due)) {
            continue;
        }

        o->owner = ngx_pid;
        o->due = now + hold;
        sh->counters.resent++;

        fin[n] = o->fin;
        ref[n].no = no;
        ref[n].seq = o->seq;
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/* a worker that exits: what it was sending is anyone's at once */

void
ngx_http_influencers_zone_disown(ngx_http_influencers_zone_t *zone)
{
    uint32_t                       no;
    ngx_http_influencers_owed_t   *o;
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    if (sh->nowing == 0) {
        return;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (no = sh->owing; no; no = o->next) {
        o = &sh->owed[no - 1];

        if (o->owner == ngx_pid) {
            o->owner = 0;
            o->due = ngx_current_msec;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


ngx_int_t
ngx_http_influencers_zone_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st)
{
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

    if (sh == NULL) {
        /* declared by name only, never made */
        return NGX_DECLINED;
    }

    st->name = zone->name;

    ngx_shmtx_lock(&zone->shpool->mutex);

    st->records = sh->records;
    st->free = sh->nfree;
    st->keyed = sh->nkeyed;
    st->inflight = sh->ninflight;
    st->orgs = sh->norgs;
    st->org_limit = ngx_max(1, sh->records * zone->org_share / 100);
    st->record_size = sh->footprint;
    st->counters = sh->counters;
    st->largest_org = sh->largest_org;
    st->owing = sh->nowing;
    st->owing_max = sh->nowed;
    st->redis_unsafe = sh->redis_unsafe;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/*
 * A record whose time is up: an idempotency entry past its lifetime stops
 * being one; a claim whose lease ran out (its worker died, or its forward
 * outlives it) leaves its key's job in doubt, for a retry to send again,
 * or, without a key, is a lost job.  Returns 1 if rec changed: whether it
 * is still its key's entry is rec->keyed.
 */

static ngx_uint_t
ngx_http_influencers_zone_expire(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec, ngx_msec_t now)
{
    if (!ngx_http_influencers_after(now, rec->deadline)) {
        return 0;
    }

    if (rec->cached) {
        /* a cache entry stays where it is, evictable, without its key */
        ngx_http_influencers_zone_unkey(sh, rec);
        rec->cached = 0;
        return 1;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone: %s of job record %p expired",
                   rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
                   ? "the lease" : "the entry", rec);

    ngx_queue_remove(&rec->queue);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING) {
        sh->counters.lease_expiries++;
        sh->ninflight--;

        if (rec->keyed) {
            ngx_http_influencers_zone_doubt(sh, rec);
            return 1;
        }

        rec->state = NGX_HTTP_INFLUENCERS_LOST;

    } else {
        sh->nkeyed--;
    }

    ngx_http_influencers_zone_unkey(sh, rec);
    ngx_http_influencers_zone_unhold(sh, rec);
    ngx_queue_insert_head(&sh->jobs, &rec->queue);

    return 1;
}


static void
ngx_http_influencers_zone_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec)
{
    uint32_t                       *p, no;
    ngx_http_influencers_zone_record_t  *r;

    if (!rec->keyed) {
        return;
    }

    no = ngx_http_influencers_record_no(sh, rec);
    p = &sh->buckets[ngx_http_influencers_zone_bucket(sh, rec->key,
                                                      sh->nbuckets)];

    while (*p != no) {
        r = ngx_http_influencers_record_at(sh, *p);
        p = &r->next;
    }

    *p = rec->next;
    rec->next = 0;
    rec->keyed = 0;
}


/* an org's count: NULL while it holds no record */

static ngx_http_influencers_org_t *
ngx_http_influencers_zone_org_find(ngx_http_influencers_shctx_t *sh,
    uint64_t hash)
{
    uint32_t                    *bucket, no;
    ngx_http_influencers_org_t  *org;

    bucket = &sh->org_buckets[ngx_http_influencers_zone_mix(sh, hash,
                                                            sh->norg_buckets)];

    for (no = *bucket; no; no = org->next) {
        org = &sh->org_counts[no - 1];

        if (org->hash == hash) {
            return org;
        }
    }

    return NULL;
}


/* an org's count, found, or made when it takes its first record */

static ngx_http_influencers_org_t *
ngx_http_influencers_zone_org_add(ngx_http_influencers_shctx_t *sh,
    uint64_t hash)
{
    uint32_t                    *bucket, no;
    ngx_http_influencers_org_t  *org;

    org = ngx_http_influencers_zone_org_find(sh, hash);

    if (org) {
        return org;
    }

    bucket = &sh->org_buckets[ngx_http_influencers_zone_mix(sh, hash,
                                                            sh->norg_buckets)];

    if (sh->orgs_free) {
        no = sh->orgs_free;
        org = &sh->org_counts[no - 1];
        sh->orgs_free = org->next;

    } else if (sh->orgs_fresh < sh->records) {
        no = ++sh->orgs_fresh;
        org = &sh->org_counts[no - 1];

    } else {
        return NULL;
    }

    org->hash = hash;
    org->nheld = 0;
    ngx_queue_init(&org->held);

    org->next = *bucket;
    *bucket = no;
    sh->norgs++;

    return org;
}


static void
ngx_http_influencers_zone_hold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec, uint64_t hash)
{
    ngx_http_influencers_org_t  *org;

    /* an org count for every record is carved, so one is always there */

    org = ngx_http_influencers_zone_org_add(sh, hash);

    if (org) {
        rec->org = ngx_http_influencers_org_no(sh, org);
        ngx_queue_insert_head(&org->held, &rec->org_queue);
        ngx_http_influencers_zone_org_count(sh, org, 1);
    }
}


static void
ngx_http_influencers_zone_unhold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec)
{
    uint32_t                    *p, no;
    ngx_http_influencers_org_t  *org;

    no = rec->org;

    if (no == 0) {
        return;
    }

    org = ngx_http_influencers_org_at(sh, no);

    rec->org = 0;
    ngx_queue_remove(&rec->org_queue);
    ngx_http_influencers_zone_org_count(sh, org, -1);

    if (org->nheld) {
        return;
    }

    p = &sh->org_buckets[ngx_http_influencers_zone_mix(sh, org->hash,
                                                       sh->norg_buckets)];

    while (*p != no) {
        p = &sh->org_counts[*p - 1].next;
    }

    *p = org->next;
    org->next = sh->orgs_free;
    sh->orgs_free = no;
    sh->norgs--;
}


/*
 * The largest org, kept exact as counts move by one: the stats never walk
 * the orgs under the lock.
 */

static void
ngx_http_influencers_zone_org_count(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_org_t *org, ngx_int_t delta)
{
    ngx_uint_t  n;

    n = org->nheld;

    if (n) {
        sh->orgs_holding[n]--;
    }

    n += delta;
    org->nheld = (uint32_t) n;

    if (n) {
        sh->orgs_holding[n]++;
    }

    if (n > sh->largest_org) {
        sh->largest_org = n;

    } else if (delta < 0 && n + 1 == sh->largest_org
               && sh->orgs_holding[n + 1] == 0)
    {
        sh->largest_org = n;
    }
}


/*
 * An org at its share: its oldest records may have expired while other
 * orgs' older ones wait at the queues' tails.  A few of its own are looked
 * at, from its oldest on.
 */

static void
ngx_http_influencers_zone_expire_org(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_org_t *org, ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *prev;
    ngx_http_influencers_zone_record_t  *rec;

    q = ngx_queue_last(&org->held);

    for (n = 0;
         n < NGX_HTTP_INFLUENCERS_SWEEP_MAX
         && q != ngx_queue_sentinel(&org->held);
         n++)
    {
        prev = ngx_queue_prev(q);
        rec = ngx_queue_data(q, ngx_http_influencers_zone_record_t, org_queue);

        if (ngx_http_influencers_zone_expire(sh, rec, now) && org->nheld == 0) {
            /* the org's count went back to the free list with its last */
            return;
        }

        q = prev;
    }
}


/*
 * The oldest entries and leases first, as limit_req does: with one ttl
 * and one lease the queues are in deadline order, so a few from each tail
 * keep up with what a request adds.
 */

static void
ngx_http_influencers_zone_expire_oldest(ngx_http_influencers_shctx_t *sh,
    ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_http_influencers_zone_record_t  *rec;

    for (n = 0; n < NGX_HTTP_INFLUENCERS_EXPIRE_MAX; n++) {
        if (ngx_queue_empty(&sh->keyed)) {
            break;
        }

        rec = ngx_queue_data(ngx_queue_last(&sh->keyed),
                             ngx_http_influencers_zone_record_t, queue);

        if (!ngx_http_influencers_zone_expire(sh, rec, now)) {
            break;
        }
    }

    for (n = 0; n < NGX_HTTP_INFLUENCERS_EXPIRE_MAX; n++) {
        if (ngx_queue_empty(&sh->inflight)) {
            break;
        }

        rec = ngx_queue_data(ngx_queue_last(&sh->inflight),
                             ngx_http_influencers_zone_record_t, queue);

        if (!ngx_http_influencers_zone_expire(sh, rec, now)) {
            break;
        }
    }
}


/*
 * A free record; else the oldest evictable job; else an expired entry.
 * Unexpired idempotency entries and live leases are never taken.
 */

static ngx_http_influencers_zone_record_t *
ngx_http_influencers_zone_alloc(ngx_http_influencers_shctx_t *sh,
                                ngx_msec_t now)
{
    ngx_queue_t                    *q;
    ngx_http_influencers_zone_record_t  *rec;

    rec = ngx_http_influencers_zone_take_free(sh);

    if (rec) {
        return rec;
    }

    /*
     * Deadlines follow the queues' order only while ttl and lease stay
     * the same: after a reload that shortened them, or entries read back
     * from a state file, an expired record may sit anywhere.  A full zone
     * is swept a few records per request, never whole under the lock.
     */

    if (ngx_queue_empty(&sh->jobs)) {
        ngx_http_influencers_zone_sweep(sh, &sh->keyed, &sh->swept_keyed, now);
        ngx_http_influencers_zone_sweep(sh, &sh->inflight, &sh->swept_inflight,
                                        now);
    }

    if (ngx_queue_empty(&sh->jobs)) {
        return NULL;
    }

    q = ngx_queue_last(&sh->jobs);
    ngx_queue_remove(q);

    rec = ngx_queue_data(q, ngx_http_influencers_zone_record_t, queue);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone: evicting job record %p%s", rec,
                   rec->cached ? ", a cache entry" : "");

    /* an entry cached from Redis: Redis still has it */

    ngx_http_influencers_zone_unkey(sh, rec);
    rec->cached = 0;

    return rec;
}


static ngx_http_influencers_zone_record_t *
ngx_http_influencers_zone_take_free(ngx_http_influencers_shctx_t *sh)
{
    ngx_queue_t                    *q;
    ngx_http_influencers_zone_record_t  *rec;

    if (!ngx_queue_empty(&sh->free)) {
        q = ngx_queue_head(&sh->free);
        ngx_queue_remove(q);
        sh->nfree--;

        return ngx_queue_data(q, ngx_http_influencers_zone_record_t, queue);
    }

    if (sh->fresh == sh->records) {
        return NULL;
    }

    rec = &sh->recs[sh->fresh++];
    ngx_memzero(rec, sizeof(ngx_http_influencers_zone_record_t));
    sh->nfree--;

    return rec;
}


static void
ngx_http_influencers_zone_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_http_influencers_zone_record_t **cursor,
    ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *next;
    ngx_http_influencers_zone_record_t  *rec;

    /* the cursor's record may have left the queue since: then the tail */

    rec = *cursor;

    /*
     * From the newest on: the tail is the oldest and expire_oldest() has
     * seen it, and after a reload to a shorter ttl or lease it is the
     * newest records that expire first.
     */

    q = (rec && ngx_http_influencers_zone_in_queue(sh, rec, queue))
        ? &rec->queue : ngx_queue_head(queue);

    for (n = 0;
         n < NGX_HTTP_INFLUENCERS_SWEEP_MAX && q != ngx_queue_sentinel(queue);
         n++)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_influencers_zone_record_t, queue);
        (void) ngx_http_influencers_zone_expire(sh, rec, now);
        q = next;
    }

    *cursor = (q == ngx_queue_sentinel(queue))
              ? NULL : ngx_queue_data(q, ngx_http_influencers_zone_record_t,
                                      queue);
}


static ngx_uint_t
ngx_http_influencers_zone_in_queue(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec, ngx_queue_t *queue)
{
    if (queue == &sh->inflight) {
        return rec->state == NGX_HTTP_INFLUENCERS_FORWARDING;
    }

    return (rec->state == NGX_HTTP_INFLUENCERS_DONE
            || rec->state == NGX_HTTP_INFLUENCERS_IN_DOUBT)
           && rec->keyed && !rec->cached;
}


static void
ngx_http_influencers_zone_entry(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec,
        ngx_http_influencers_entry_t *entry)
{
    ngx_memzero(entry, sizeof(ngx_http_influencers_entry_t));

    ngx_memcpy(entry->key, rec->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(entry->fingerprint, rec->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(entry->job_id, rec->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(entry->influencer_id, rec->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(entry->request_id, rec->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    entry->expires = rec->expires;
    entry->org_hash = rec->org
                      ? ngx_http_influencers_org_at(sh, rec->org)->hash : 0;
    entry->retry_after = rec->retry_after;
    entry->gender = rec->gender;
    entry->age_range = rec->age_range;
    entry->state = (rec->state == NGX_HTTP_INFLUENCERS_DONE)
                   ? NGX_HTTP_INFLUENCERS_ENTRY_DONE
                   : NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN;
}


/*
 * Every unexpired entry, for the snapshot: accepted ones, jobs in doubt,
 * and the claims still in flight, whose forwards no worker is left to end
 * (the master writes the snapshot as it exits): in doubt.
 */

ngx_uint_t
ngx_http_influencers_zone_each(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_pt handler, void *data)
{
    uint64_t                        now_ms;
    ngx_uint_t                      n;
    ngx_queue_t                    *q;
    ngx_http_influencers_entry_t    entry;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec;

    sh = zone->sh;
    now_ms = ngx_http_influencers_zone_wall_ms();
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&sh->keyed);
         q != ngx_queue_sentinel(&sh->keyed);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_influencers_zone_record_t, queue);

        if (rec->expires <= now_ms) {
            continue;
        }

        ngx_http_influencers_zone_entry(sh, rec, &entry);
        handler(&entry, data);
        n++;
    }

    for (q = ngx_queue_head(&sh->inflight);
         q != ngx_queue_sentinel(&sh->inflight);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_influencers_zone_record_t, queue);

        if (!rec->keyed || zone->redis) {
            continue;
        }

        ngx_http_influencers_zone_entry(sh, rec, &entry);
        entry.expires = now_ms + sh->ttl;
        handler(&entry, data);
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/*
 * An entry read back from disk, accepted or in doubt; the caller gives
 * them newest first, and at most limit of them are taken, and no org's
 * past nine tenths of its share: a restore leaves every org room for new
 * jobs.  It never outlives the ttl configured now.
 */

ngx_uint_t
ngx_http_influencers_zone_restore(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_t *entry, ngx_uint_t limit)
{
    uint64_t                        now_ms, expires;
    ngx_uint_t                      rc, share;
    ngx_http_influencers_org_t     *org;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_zone_record_t  *rec, *head;

    sh = zone->sh;
    now_ms = ngx_http_influencers_zone_wall_ms();

    if (entry->expires <= now_ms
        || ngx_http_influencers_zone_check(zone, entry) != NGX_OK)
    {
        return NGX_HTTP_INFLUENCERS_DUPLICATE;
    }

    expires = ngx_min(entry->expires, now_ms + zone->ttl);

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (ngx_http_influencers_zone_lookup(sh, entry->key) != NULL) {
        rc = NGX_HTTP_INFLUENCERS_DUPLICATE;
        goto done;
    }

    if (sh->records - sh->nfree >= limit) {
        rc = NGX_HTTP_INFLUENCERS_NO_ROOM;
        goto done;
    }

    /* a tenth of each org's share stays free too, for its new jobs */

    share = ngx_max(1, sh->records * zone->org_share / 100);
    share -= (share > 1) ? ngx_max(share / 10, 1) : 0;

    org = ngx_http_influencers_zone_org_find(sh, entry->org_hash);

    if (org && org->nheld >= share) {
        rc = NGX_HTTP_INFLUENCERS_OVER_SHARE;
        goto done;
    }

    rec = ngx_http_influencers_zone_take_free(sh);

    if (rec == NULL) {
        rc = NGX_HTTP_INFLUENCERS_NO_ROOM;
        goto done;
    }

    ngx_memcpy(rec->key, entry->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(rec->fingerprint, entry->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(rec->job_id, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(rec->influencer_id, entry->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(rec->request_id, entry->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    rec->retry_after = entry->retry_after;
    rec->gender = entry->gender;
    rec->age_range = entry->age_range;
    rec->attempt = 1;
    rec->body = 0;
    rec->cached = 0;
    rec->expires = expires;
    rec->deadline = ngx_current_msec + (ngx_msec_t) (expires - now_ms);

    if (entry->state == NGX_HTTP_INFLUENCERS_ENTRY_DONE) {
        rec->state = NGX_HTTP_INFLUENCERS_DONE;
        rec->in_doubt = 0;

    } else {
        rec->state = NGX_HTTP_INFLUENCERS_IN_DOUBT;
        rec->in_doubt = 1;
    }

    ngx_http_influencers_zone_index(sh, rec);

    ngx_http_influencers_zone_hold(sh, rec, entry->org_hash);

    if (ngx_queue_empty(&sh->keyed)) {
        ngx_queue_insert_head(&sh->keyed, &rec->queue);

    } else {
        head = ngx_queue_data(ngx_queue_head(&sh->keyed),
                              ngx_http_influencers_zone_record_t, queue);

        if (ngx_http_influencers_after(rec->deadline, head->deadline)) {
            ngx_queue_insert_head(&sh->keyed, &rec->queue);

        } else {
            ngx_queue_insert_tail(&sh->keyed, &rec->queue);
        }
    }

    sh->nkeyed++;
    rc = NGX_HTTP_INFLUENCERS_RESTORED;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, ngx_cycle->log, 0,
                   "influencers zone \"%V\": entry read back: %ui",
                   &zone->name, rc);

    return rc;
}


/*
 * What an entry read from outside (a state file, Redis) must be before it
 * is believed: a state the zone knows, a Retry-After the directives allow,
 * and, for a job that may be sent again, parameters the module knows.  Its
 * expiry is cut to the ttl by the caller.
 */

ngx_int_t
ngx_http_influencers_zone_check(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_t *entry)
{
    if (entry->retry_after > 24 * 60 * 60) {
        return NGX_ERROR;
    }

    switch (entry->state) {

    case NGX_HTTP_INFLUENCERS_ENTRY_DONE:
        return NGX_OK;

    case NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN:
        if (entry->gender == 0
            || entry->gender > NGX_HTTP_INFLUENCERS_GENDER_LAST
            || entry->age_range == 0
            || entry->age_range > NGX_HTTP_INFLUENCERS_AGE_LAST)
        {
            return NGX_ERROR;
        }

        return NGX_OK;

    default:
        return NGX_ERROR;
    }
}


/*
 * How many entries a restore may fill: a tenth of the records stays free
 * for new jobs, whatever the state file holds.
 */

ngx_uint_t
ngx_http_influencers_zone_room(ngx_http_influencers_zone_t *zone)
{
    ngx_uint_t  records;

    records = zone->sh->records;

    return records - ngx_max(records / 10, 1);
}


/* FNV-1a: orgs are authenticated, so no one picks a name to collide */

uint64_t
ngx_http_influencers_zone_org_hash(u_char *org, size_t len)
{
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    while (len--) {
        h ^= *org++;
        h *= 0x100000001b3ULL;
    }

    return h;
}


/* the zones of a cycle, one after another: NULL starts */

ngx_http_influencers_zone_t *
ngx_http_influencers_zone_next(ngx_cycle_t *cycle,
    ngx_http_influencers_zone_t *prev)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = prev ? prev->shm_zone : NULL;

    do {
        shm_zone = ngx_http_influencers_zone_next_zone(cycle, shm_zone);
    } while (shm_zone && shm_zone->data == NULL);

    return shm_zone ? shm_zone->data : NULL;
}


static void
ngx_http_influencers_zone_fill(ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_claim_t *claim)
{
    if (claim->idem) {
        ngx_memcpy(rec->key, claim->idem, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    }

    ngx_memcpy(rec->fingerprint, claim->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(rec->request_id, claim->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    rec->gender = (u_char) claim->gender;
    rec->age_range = (u_char) claim->age_range;
    rec->body = claim->body;
    rec->keyed = 0;
    rec->cached = 0;
}


/*
 * The entry's job, as the first answer showed it and as its first forward
 * carried it
 */

static void
ngx_http_influencers_zone_answer(ngx_http_influencers_zone_record_t *rec,
    ngx_http_influencers_store_ticket_t *ticket)
{
    ngx_memcpy(ticket->job_id, rec->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(ticket->influencer_id, rec->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(ticket->request_id, rec->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ticket->gender = rec->gender;
    ticket->age_range = rec->age_range;
    ticket->retry_after = rec->retry_after;
    ticket->expires = (time_t) (rec->expires / 1000);
    ticket->expires_ms = rec->expires;
    ticket->record = rec;
}


uint64_t
ngx_http_influencers_zone_wall_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static void
ngx_http_influencers_zone_next_ulid(ngx_http_influencers_shctx_t *sh,
    u_char *random, u_char *out)
{
    uint64_t    ms;
    ngx_int_t   i;

    ms = ngx_http_influencers_zone_wall_ms();

    if (ms > sh->ulid_ms) {
        sh->ulid_ms = ms;
        ngx_memcpy(sh->ulid_rand, random, 10);

    } else {
        /* the same millisecond, or the clock stepped back: increment */

        for (i = 9; i >= 0; i--) {
            if (++sh->ulid_rand[i] != 0) {
                break;
            }
        }

        if (i < 0) {
            sh->ulid_ms++;
        }
    }

    ms = sh->ulid_ms;

    for (i = 5; i >= 0; i--) {
        out[i] = (u_char) (ms & 0xff);
        ms >>= 8;
    }

    ngx_memcpy(out + 6, sh->ulid_rand, 10);
}


static ngx_http_influencers_zone_record_t *
ngx_http_influencers_zone_lookup(ngx_http_influencers_shctx_t *sh, u_char *key)
{
    uint32_t                        no;
    ngx_http_influencers_zone_record_t  *rec;

    no = sh->buckets[ngx_http_influencers_zone_bucket(sh, key, sh->nbuckets)];

    while (no) {
        rec = ngx_http_influencers_record_at(sh, no);

        if (ngx_memcmp(key, rec->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN) == 0) {
            return rec;
        }

        no = rec->next;
    }

    return NULL;
}


static void
ngx_http_influencers_zone_index(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_zone_record_t *rec)
{
    uint32_t  *bucket;

    bucket = &sh->buckets[ngx_http_influencers_zone_bucket(sh, rec->key,
                                                           sh->nbuckets)];
    rec->next = *bucket;
    *bucket = ngx_http_influencers_record_no(sh, rec);
    rec->keyed = 1;
}


/*
 * nginx silently starts an empty zone when a reload changes its size:
 * every idempotency entry would be forgotten, so such a reload fails.
 */

char *
ngx_http_influencers_zone_check_reload(ngx_conf_t *cf, ngx_str_t *name,
    size_t size)
{
    ngx_cycle_t     *old;
    ngx_shm_zone_t  *shm_zone;

    old = cf->cycle->old_cycle;

    if (old == NULL || ngx_is_init_cycle(old)) {
        return NGX_CONF_OK;
    }

    for (shm_zone = ngx_http_influencers_zone_next_zone(old, NULL);
         shm_zone;
         shm_zone = ngx_http_influencers_zone_next_zone(old, shm_zone))
    {
        if (shm_zone->shm.name.len == name->len
            && ngx_strncmp(shm_zone->shm.name.data, name->data, name->len)
               == 0
            && shm_zone->shm.size != size)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "influencers zone \"%V\" cannot change size "
                               "from %uz to %uz on reload: its entries would "
                               "be lost; keep the size, or stop and start "
                               "nginx (with \"state=\" the entries survive)",
                               name, shm_zone->shm.size, size);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* the influencers zones of a cycle, one after another: NULL starts */

static ngx_shm_zone_t *
ngx_http_influencers_zone_next_zone(ngx_cycle_t *cycle, ngx_shm_zone_t *prev)
{
    ngx_uint_t        i, seen;
    ngx_list_part_t  *part;
    ngx_shm_zone_t   *shm_zone;

    seen = (prev == NULL);
    part = &cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (!seen) {
            seen = (&shm_zone[i] == prev);
            continue;
        }

        if (shm_zone[i].tag == &ngx_http_influencers_module) {
            return &shm_zone[i];
        }
    }
}


