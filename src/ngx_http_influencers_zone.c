
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_state.h"
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
 *   keyed     accepted with an Idempotency-Key (deadline is its expiry),
 *             in the key index too, never evicted before it expires;
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


typedef struct {
    ngx_queue_t                   queue;
    ngx_queue_t                   org_queue;
    uint32_t                      next;         /* in the key's bucket */
    uint32_t                      org;          /* 0: not held */
    u_char                        key[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        job_id[16];
    u_char                        influencer_id[16];
    ngx_msec_t                    deadline;
    uint64_t                      expires;      /* wall clock, ms */
    uint64_t                      body;         /* 0: not known here */
    uint32_t                      retry_after;
    u_char                        state;
    u_char                        keyed;
    u_char                        cached;       /* fleet: Redis holds it */
} ngx_http_influencers_record_t;


typedef struct ngx_http_influencers_shctx_s {
    uint32_t                      magic;
    uint32_t                      version;
    size_t                        record_size;
    size_t                        zone_size;

    /* the records, their orgs' counts, and the two indexes */
    ngx_http_influencers_record_t  *recs;
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
    ngx_http_influencers_record_t  *swept_keyed;
    ngx_http_influencers_record_t  *swept_inflight;

    /* ULIDs stay sorted across workers: the last one, under the lock */
    uint64_t                      ulid_ms;
    u_char                        ulid_rand[10];

    time_t                        full_logged;
    time_t                        share_logged;

    ngx_http_influencers_journal_t   journal;
    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_shctx_t;


static ngx_int_t ngx_http_influencers_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_uint_t ngx_http_influencers_carve(ngx_slab_pool_t *shpool,
    ngx_http_influencers_shctx_t *sh, ngx_log_t *log);
static void ngx_http_influencers_org_count(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_org_t *org, ngx_int_t delta);
static void ngx_http_influencers_expire_org(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_org_t *org, ngx_msec_t now);
static ngx_http_influencers_record_t *ngx_http_influencers_lookup(
    ngx_http_influencers_shctx_t *sh, u_char *key);
static void ngx_http_influencers_index(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec);
static ngx_http_influencers_org_t *ngx_http_influencers_org(
    ngx_http_influencers_shctx_t *sh, uint64_t hash, ngx_uint_t create);
static void ngx_http_influencers_hold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, uint64_t hash);
static void ngx_http_influencers_unhold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec);
static void ngx_http_influencers_expire_oldest(
    ngx_http_influencers_shctx_t *sh, ngx_msec_t now);
static ngx_http_influencers_record_t *ngx_http_influencers_alloc(
    ngx_http_influencers_shctx_t *sh, ngx_msec_t now);
static ngx_http_influencers_record_t *ngx_http_influencers_take_free(
    ngx_http_influencers_shctx_t *sh);
static void ngx_http_influencers_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_http_influencers_record_t **cursor,
    ngx_msec_t now);
static ngx_uint_t ngx_http_influencers_in_queue(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_record_t *rec,
    ngx_queue_t *queue);
static ngx_uint_t ngx_http_influencers_expire(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_record_t *rec,
    ngx_msec_t now);
static void ngx_http_influencers_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec);
static void ngx_http_influencers_entry(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, ngx_http_influencers_entry_t *entry);
static void ngx_http_influencers_next_ulid(ngx_http_influencers_shctx_t *sh,
    u_char *random, u_char *out);
static void ngx_http_influencers_fill(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_claim_t *claim);
static void ngx_http_influencers_answer(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_accept_t *acc);
static ngx_shm_zone_t *ngx_http_influencers_next_zone(ngx_cycle_t *cycle,
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
ngx_http_influencers_mix(ngx_http_influencers_shctx_t *sh, uint64_t x,
    uint32_t n)
{
    return (uint32_t) ((((x * sh->mix) >> 32) * n) >> 32);
}


static ngx_inline uint32_t
ngx_http_influencers_bucket(ngx_http_influencers_shctx_t *sh, u_char *key,
    uint32_t n)
{
    uint64_t  x;

    ngx_memcpy(&x, key, sizeof(uint64_t));

    return ngx_http_influencers_mix(sh, x, n);
}


#define ngx_http_influencers_after(a, b)  ((ngx_msec_int_t) ((a) - (b)) >= 0)


#if (NGX_DEBUG)

/* indexed by the outcomes of a claim, for the debug log */

static const char  *ngx_http_influencers_claim_names[] = {
    "new", "replay", "busy", "mismatch", "full", "over the org's share"
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

    shm_zone->init = ngx_http_influencers_init_zone;
    shm_zone->data = zone;

    return zone;
}


static ngx_int_t
ngx_http_influencers_init_zone(ngx_shm_zone_t *shm_zone, void *data)
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
            || sh->record_size != sizeof(ngx_http_influencers_record_t))
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "influencers zone \"%V\" has another layout "
                          "(version %uD), restart nginx to recreate it",
                          &shm_zone->shm.name, sh->version);
            return NGX_ERROR;
        }

        zone->sh = sh;
        zone->shpool = ozone->shpool;

        return ngx_http_influencers_state_open(zone, ozone, shm_zone->shm.log);
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
    sh->record_size = sizeof(ngx_http_influencers_record_t);
    sh->zone_size = shm_zone->shm.size;

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

    /* ngx_http_influencers_random() logs its own failure */

    if (ngx_http_influencers_random((u_char *) &sh->mix, sizeof(uint64_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sh->mix |= 1;

    if (ngx_http_influencers_random(sh->body_key, sizeof(sh->body_key))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_influencers_carve(shpool, sh, shm_zone->shm.log) == 0) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "influencers zone \"%V\" is too small for one job",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool = shpool;

    if (ngx_http_influencers_state_open(zone, NULL, shm_zone->shm.log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_influencers_state_load(zone, &sh->journal, shm_zone->shm.log);

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
ngx_http_influencers_carve(ngx_slab_pool_t *shpool,
    ngx_http_influencers_shctx_t *sh, ngx_log_t *log)
{
    u_char      *p;
    size_t       per, size, avail;
    uint32_t     n;
    ngx_uint_t   norg;

    shpool->log_nomem = 0;

    per = sizeof(ngx_http_influencers_record_t)
          + sizeof(ngx_http_influencers_org_t)
          + sizeof(uint32_t)                           /* its bucket */
          + sizeof(uint32_t)                           /* its org's count */
          + sizeof(uint32_t) / NGX_HTTP_INFLUENCERS_ORGS_PER_BUCKET;

    /* the arrays one after another, each aligned, and a bucket rounded */

    avail = shpool->pfree * ngx_pagesize;
    size = 4 * NGX_ALIGNMENT + 2 * sizeof(uint32_t);

    if (avail <= size + per) {
        return 0;
    }

    n = (uint32_t) ngx_min((avail - size) / per, NGX_MAX_UINT32_VALUE / 2);

    for ( ;; ) {
        norg = n / NGX_HTTP_INFLUENCERS_ORGS_PER_BUCKET + 1;

        size = ngx_align(n * sizeof(ngx_http_influencers_record_t),
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

    sh->recs = (ngx_http_influencers_record_t *) p;
    p += ngx_align(n * sizeof(ngx_http_influencers_record_t), NGX_ALIGNMENT);

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
 * answer from the entry or claim it with a new job, atomically across
 * workers.  The work done here is bounded whatever the zone's size.
 */

ngx_int_t
ngx_http_influencers_zone_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log)
{
    ngx_int_t                       rc;
    ngx_msec_t                      now;
    ngx_uint_t                      log_full, log_share, limit;
    ngx_http_influencers_org_t     *org;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    now = ngx_current_msec;
    log_full = 0;
    log_share = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_influencers_expire_oldest(sh, now);

    if (claim->idem) {
        rec = ngx_http_influencers_lookup(sh, claim->idem);

        if (rec && ngx_http_influencers_expire(sh, rec, now)) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "influencers zone \"%V\": the key's entry had "
                           "expired", &zone->name);
            rec = NULL;
        }

        if (rec) {
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                           "influencers zone \"%V\": the key has an entry, "
                           "%s, state %d", &zone->name,
                           ngx_memcmp(rec->fingerprint, claim->fingerprint,
                                      NGX_HTTP_INFLUENCERS_DIGEST_LEN)
                           ? "another request's" : "this request's",
                           (int) rec->state);

            if (ngx_memcmp(rec->fingerprint, claim->fingerprint,
                           NGX_HTTP_INFLUENCERS_DIGEST_LEN)
                != 0)
            {
                sh->counters.mismatches++;
                rc = NGX_HTTP_INFLUENCERS_CLAIM_MISMATCH;

            } else if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING) {
                sh->counters.conflicts++;
                rc = NGX_HTTP_INFLUENCERS_CLAIM_BUSY;

            } else {
                sh->counters.replays++;
                ngx_http_influencers_answer(rec, acc);
                rc = NGX_HTTP_INFLUENCERS_CLAIM_REPLAY;
            }

            goto done;
        }
    }

    /* no org holds more than its share, so none can lock another out */

    limit = ngx_max(1, sh->records * zone->org_share / 100);
    org = ngx_http_influencers_org(sh, claim->org_hash, 0);

    if (org && org->nheld >= limit) {
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": the org holds %uD of %ui "
                       "records, expiring its oldest", &zone->name,
                       org->nheld, limit);

        /* its own expired entries first, wherever the others' are */
        ngx_http_influencers_expire_org(sh, org, now);
        org = ngx_http_influencers_org(sh, claim->org_hash, 0);
    }

    /* a share of the whole zone is no share: a full zone is a full zone */

    if (org && org->nheld >= limit && limit < sh->records) {
        sh->counters.share++;

        if (sh->share_logged != ngx_time() / 60) {
            sh->share_logged = ngx_time() / 60;
            log_share = 1;
        }

        rc = NGX_HTTP_INFLUENCERS_CLAIM_OVER_SHARE;
        goto done;
    }

    rec = ngx_http_influencers_alloc(sh, now);

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

        rc = NGX_HTTP_INFLUENCERS_CLAIM_FULL;
        goto done;
    }

    /* write the record, then publish it */

    ngx_http_influencers_fill(rec, claim);
    ngx_http_influencers_next_ulid(sh, claim->random, rec->job_id);
    ngx_memcpy(rec->influencer_id, claim->random + 10, 16);
    rec->retry_after = (uint32_t) acc->retry_after;
    rec->deadline = now + zone->lease;
    rec->expires = 0;
    rec->state = NGX_HTTP_INFLUENCERS_FORWARDING;

    ngx_queue_insert_head(&sh->inflight, &rec->queue);
    sh->ninflight++;

    ngx_http_influencers_hold(sh, rec, claim->org_hash);

    if (claim->idem) {
        ngx_http_influencers_index(sh, rec);
    }

    sh->counters.claims++;

    ngx_memcpy(acc->job_id, rec->job_id, 16);
    ngx_memcpy(acc->influencer_id, rec->influencer_id, 16);
    acc->record = rec;

    rc = NGX_HTTP_INFLUENCERS_CLAIM_NEW;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": claim %s: %s",
                   &zone->name, claim->idem ? "with a key" : "without a key",
                   ngx_http_influencers_claim_names[rc]);

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


ngx_uint_t
ngx_http_influencers_zone_replay(ngx_http_influencers_zone_t *zone,
    u_char *key, uint64_t body, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log)
{
    ngx_uint_t                      found;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    found = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    rec = ngx_http_influencers_lookup(sh, key);

    if (rec && rec->body == body && rec->state == NGX_HTTP_INFLUENCERS_DONE
        && !ngx_http_influencers_after(ngx_current_msec, rec->deadline))
    {
        sh->counters.replays++;
        ngx_http_influencers_answer(rec, acc);
        found = 1;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": %s", &zone->name,
                   found ? "a retry of the same bytes, replayed"
                         : "not a retry of the same bytes");

    return found;
}


/* the forward's outcome: remembered if accepted, the key released if not */

void
ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_uint_t accepted, ngx_uint_t known,
    ngx_uint_t cache, ngx_log_t *log)
{
    ngx_int_t                       seq;
    ngx_http_influencers_entry_t    entry;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    rec = acc->record;
    seq = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* after a lease expiry the record may belong to another job by now */

    if (rec->state != NGX_HTTP_INFLUENCERS_FORWARDING
        || ngx_memcmp(rec->job_id, acc->job_id, 16) != 0)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": finish of a job whose "
                       "lease ran out: nothing recorded", &zone->name);
        goto done;
    }

    if (!known) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "influencers zone \"%V\": outcome unknown, the "
                       "lease runs out", &zone->name);

        /* the partner left before the outcome: let the lease run out */
        goto done;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "influencers zone \"%V\": finish: %s, %s%s",
                   &zone->name, accepted ? "accepted" : "failed",
                   rec->keyed ? "keyed" : "no key",
                   (rec->keyed && accepted && cache) ? ", cached" : "");

    ngx_queue_remove(&rec->queue);
    sh->ninflight--;

    if (accepted) {
        sh->counters.accepted++;
        rec->state = NGX_HTTP_INFLUENCERS_DONE;

        if (rec->keyed) {
            rec->deadline = ngx_current_msec + zone->ttl;
            rec->expires = ngx_http_influencers_wall_ms() + zone->ttl;
            acc->expires = (time_t) (rec->expires / 1000);
            acc->expires_ms = rec->expires;
        }

        if (rec->keyed && cache) {
            /* Redis holds it: here it is a cache entry, evictable */
            rec->cached = 1;
            ngx_http_influencers_unhold(sh, rec);
            ngx_queue_insert_head(&sh->jobs, &rec->queue);

        } else if (rec->keyed) {
            ngx_queue_insert_head(&sh->keyed, &rec->queue);
            sh->nkeyed++;

            /* its org's newest too: the org's oldest expire first */

            if (rec->org) {
                ngx_queue_remove(&rec->org_queue);
                ngx_queue_insert_head(
                    &ngx_http_influencers_org_at(sh, rec->org)->held,
                    &rec->org_queue);
            }

            seq = ngx_http_influencers_state_rotate(zone, &sh->journal, log);

            if (seq != NGX_DECLINED) {
                ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                               "influencers zone \"%V\": to the journal's "
                               "segment %i", &zone->name, seq);

                ngx_http_influencers_entry(sh, rec, &entry);
            }

        } else {
            ngx_http_influencers_unhold(sh, rec);
            ngx_queue_insert_head(&sh->jobs, &rec->queue);
        }

    } else {
        sh->counters.failed++;
        rec->state = NGX_HTTP_INFLUENCERS_FAILED;

        if (rec->keyed) {
            sh->counters.releases++;
            ngx_http_influencers_unkey(sh, rec);
        }

        ngx_http_influencers_unhold(sh, rec);
        ngx_queue_insert_head(&sh->jobs, &rec->queue);
    }

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    /* on disk before the partner hears of it */

    if (seq != NGX_DECLINED) {
        ngx_http_influencers_state_append(zone, seq, &entry, log);
    }
}


/*
 * Fleet mode: Redis refused the claim (in flight or another request on
 * another node) or could not be asked.  The zone's claim goes, unseen.
 */

void
ngx_http_influencers_zone_abandon(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    rec = acc->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": claim abandoned%s",
                   &zone->name,
                   rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
                   ? "" : ", its lease had run out");

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
        && ngx_memcmp(rec->job_id, acc->job_id, 16) == 0)
    {
        ngx_queue_remove(&rec->queue);
        sh->ninflight--;
        sh->counters.claims--;
        sh->counters.unclaimed++;

        ngx_http_influencers_unkey(sh, rec);
        ngx_http_influencers_unhold(sh, rec);

        rec->state = NGX_HTTP_INFLUENCERS_FREE;
        ngx_queue_insert_head(&sh->free, &rec->queue);
        sh->nfree++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * Fleet mode: another node accepted the key.  Its entry replaces the
 * zone's claim, cached, so that this node replays it from now on.
 */

void
ngx_http_influencers_zone_adopt(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_entry_t *entry)
{
    uint64_t                        now_ms;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    rec = acc->record;
    now_ms = ngx_http_influencers_wall_ms();

    ngx_shmtx_lock(&zone->shpool->mutex);

    sh->counters.claims--;
    sh->counters.unclaimed++;
    sh->counters.replays++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone \"%V\": another node's entry adopted",
                   &zone->name);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING
        && ngx_memcmp(rec->job_id, acc->job_id, 16) == 0)
    {
        ngx_queue_remove(&rec->queue);
        sh->ninflight--;
        ngx_http_influencers_unhold(sh, rec);

        ngx_memcpy(rec->job_id, entry->job_id, 16);
        ngx_memcpy(rec->influencer_id, entry->influencer_id, 16);
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

    ngx_memcpy(acc->job_id, entry->job_id, 16);
    ngx_memcpy(acc->influencer_id, entry->influencer_id, 16);
    acc->retry_after = entry->retry_after;
    acc->expires = (time_t) (entry->expires / 1000);
    acc->expires_ms = entry->expires;
}


/*
 * Fleet mode: Redis refused a finish, the claim there had run out and may
 * be another node's now.  This node's cache entry goes: Redis answers.
 */

void
ngx_http_influencers_zone_forget(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    rec = acc->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (rec->cached && ngx_memcmp(rec->job_id, acc->job_id, 16) == 0) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "influencers zone \"%V\": cache entry forgotten",
                       &zone->name);

        ngx_http_influencers_unkey(sh, rec);
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

    default: /* NGX_HTTP_INFLUENCERS_COUNT_STALE */
        n = &sh->counters.redis_stale;
        break;
    }

    (void) ngx_atomic_fetch_add(n, 1);
}


void
ngx_http_influencers_zone_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st)
{
    ngx_http_influencers_shctx_t  *sh;

    sh = zone->sh;

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

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * An entry whose time is up stops being one: an idempotency entry past its
 * lifetime, or a claim whose lease ran out (its worker died, or its forward
 * never finished).  Returns 1 if rec was expired.
 */

static ngx_uint_t
ngx_http_influencers_expire(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, ngx_msec_t now)
{
    if (!ngx_http_influencers_after(now, rec->deadline)) {
        return 0;
    }

    if (rec->cached) {
        /* a cache entry stays where it is, evictable, without its key */
        ngx_http_influencers_unkey(sh, rec);
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
        rec->state = NGX_HTTP_INFLUENCERS_LOST;

    } else {
        sh->nkeyed--;
    }

    ngx_http_influencers_unkey(sh, rec);
    ngx_http_influencers_unhold(sh, rec);
    ngx_queue_insert_head(&sh->jobs, &rec->queue);

    return 1;
}


static void
ngx_http_influencers_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec)
{
    uint32_t                       *p, no;
    ngx_http_influencers_record_t  *r;

    if (!rec->keyed) {
        return;
    }

    no = ngx_http_influencers_record_no(sh, rec);
    p = &sh->buckets[ngx_http_influencers_bucket(sh, rec->key,
                                                 sh->nbuckets)];

    while (*p != no) {
        r = ngx_http_influencers_record_at(sh, *p);
        p = &r->next;
    }

    *p = rec->next;
    rec->next = 0;
    rec->keyed = 0;
}


/* an org's count, found, or made when it takes its first record */

static ngx_http_influencers_org_t *
ngx_http_influencers_org(ngx_http_influencers_shctx_t *sh, uint64_t hash,
    ngx_uint_t create)
{
    uint32_t                    *bucket, no;
    ngx_http_influencers_org_t  *org;

    bucket = &sh->org_buckets[ngx_http_influencers_mix(sh, hash,
                                                       sh->norg_buckets)];

    for (no = *bucket; no; no = org->next) {
        org = &sh->org_counts[no - 1];

        if (org->hash == hash) {
            return org;
        }
    }

    if (!create) {
        return NULL;
    }

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
ngx_http_influencers_hold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, uint64_t hash)
{
    ngx_http_influencers_org_t  *org;

    /* an org count for every record is carved, so one is always there */

    org = ngx_http_influencers_org(sh, hash, 1);

    if (org) {
        rec->org = ngx_http_influencers_org_no(sh, org);
        ngx_queue_insert_head(&org->held, &rec->org_queue);
        ngx_http_influencers_org_count(sh, org, 1);
    }
}


static void
ngx_http_influencers_unhold(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec)
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
    ngx_http_influencers_org_count(sh, org, -1);

    if (org->nheld) {
        return;
    }

    p = &sh->org_buckets[ngx_http_influencers_mix(sh, org->hash,
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
ngx_http_influencers_org_count(ngx_http_influencers_shctx_t *sh,
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
ngx_http_influencers_expire_org(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_org_t *org, ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *prev;
    ngx_http_influencers_record_t  *rec;

    q = ngx_queue_last(&org->held);

    for (n = 0;
         n < NGX_HTTP_INFLUENCERS_SWEEP_MAX
         && q != ngx_queue_sentinel(&org->held);
         n++)
    {
        prev = ngx_queue_prev(q);
        rec = ngx_queue_data(q, ngx_http_influencers_record_t, org_queue);

        if (ngx_http_influencers_expire(sh, rec, now) && org->nheld == 0) {
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
ngx_http_influencers_expire_oldest(ngx_http_influencers_shctx_t *sh,
    ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_http_influencers_record_t  *rec;

    for (n = 0; n < NGX_HTTP_INFLUENCERS_EXPIRE_MAX; n++) {
        if (ngx_queue_empty(&sh->keyed)) {
            break;
        }

        rec = ngx_queue_data(ngx_queue_last(&sh->keyed),
                             ngx_http_influencers_record_t, queue);

        if (!ngx_http_influencers_expire(sh, rec, now)) {
            break;
        }
    }

    for (n = 0; n < NGX_HTTP_INFLUENCERS_EXPIRE_MAX; n++) {
        if (ngx_queue_empty(&sh->inflight)) {
            break;
        }

        rec = ngx_queue_data(ngx_queue_last(&sh->inflight),
                             ngx_http_influencers_record_t, queue);

        if (!ngx_http_influencers_expire(sh, rec, now)) {
            break;
        }
    }
}


/*
 * A free record; else the oldest evictable job; else an expired entry.
 * Unexpired idempotency entries and live leases are never taken.
 */

static ngx_http_influencers_record_t *
ngx_http_influencers_alloc(ngx_http_influencers_shctx_t *sh, ngx_msec_t now)
{
    ngx_queue_t                    *q;
    ngx_http_influencers_record_t  *rec;

    rec = ngx_http_influencers_take_free(sh);

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
        ngx_http_influencers_sweep(sh, &sh->keyed, &sh->swept_keyed, now);
        ngx_http_influencers_sweep(sh, &sh->inflight, &sh->swept_inflight,
                                   now);
    }

    if (ngx_queue_empty(&sh->jobs)) {
        return NULL;
    }

    q = ngx_queue_last(&sh->jobs);
    ngx_queue_remove(q);

    rec = ngx_queue_data(q, ngx_http_influencers_record_t, queue);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "influencers zone: evicting job record %p%s", rec,
                   rec->cached ? ", a cache entry" : "");

    /* an entry cached from Redis: Redis still has it */

    ngx_http_influencers_unkey(sh, rec);
    rec->cached = 0;

    return rec;
}


static ngx_http_influencers_record_t *
ngx_http_influencers_take_free(ngx_http_influencers_shctx_t *sh)
{
    ngx_queue_t                    *q;
    ngx_http_influencers_record_t  *rec;

    if (!ngx_queue_empty(&sh->free)) {
        q = ngx_queue_head(&sh->free);
        ngx_queue_remove(q);
        sh->nfree--;

        return ngx_queue_data(q, ngx_http_influencers_record_t, queue);
    }

    if (sh->fresh == sh->records) {
        return NULL;
    }

    rec = &sh->recs[sh->fresh++];
    ngx_memzero(rec, sizeof(ngx_http_influencers_record_t));
    sh->nfree--;

    return rec;
}


static void
ngx_http_influencers_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_http_influencers_record_t **cursor,
    ngx_msec_t now)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *next;
    ngx_http_influencers_record_t  *rec;

    /* the cursor's record may have left the queue since: then the tail */

    rec = *cursor;

    /*
     * From the newest on: the tail is the oldest and expire_oldest() has
     * seen it, and after a reload to a shorter ttl or lease it is the
     * newest records that expire first.
     */

    q = (rec && ngx_http_influencers_in_queue(sh, rec, queue))
        ? &rec->queue : ngx_queue_head(queue);

    for (n = 0;
         n < NGX_HTTP_INFLUENCERS_SWEEP_MAX && q != ngx_queue_sentinel(queue);
         n++)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_influencers_record_t, queue);
        (void) ngx_http_influencers_expire(sh, rec, now);
        q = next;
    }

    *cursor = (q == ngx_queue_sentinel(queue))
              ? NULL : ngx_queue_data(q, ngx_http_influencers_record_t, queue);
}


static ngx_uint_t
ngx_http_influencers_in_queue(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, ngx_queue_t *queue)
{
    if (queue == &sh->inflight) {
        return rec->state == NGX_HTTP_INFLUENCERS_FORWARDING;
    }

    return rec->state == NGX_HTTP_INFLUENCERS_DONE && rec->keyed
           && !rec->cached;
}


static void
ngx_http_influencers_entry(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec, ngx_http_influencers_entry_t *entry)
{
    ngx_memzero(entry, sizeof(ngx_http_influencers_entry_t));

    ngx_memcpy(entry->key, rec->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(entry->fingerprint, rec->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(entry->job_id, rec->job_id, 16);
    ngx_memcpy(entry->influencer_id, rec->influencer_id, 16);
    entry->expires = rec->expires;
    entry->org_hash = rec->org
                      ? ngx_http_influencers_org_at(sh, rec->org)->hash : 0;
    entry->retry_after = rec->retry_after;
}


/* every unexpired entry, newest first, for the snapshot */

ngx_uint_t
ngx_http_influencers_zone_each(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_pt handler, void *data)
{
    uint64_t                        now_ms;
    ngx_uint_t                      n;
    ngx_queue_t                    *q;
    ngx_http_influencers_entry_t    entry;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    now_ms = ngx_http_influencers_wall_ms();
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&sh->keyed);
         q != ngx_queue_sentinel(&sh->keyed);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_influencers_record_t, queue);

        if (rec->expires <= now_ms) {
            continue;
        }

        ngx_http_influencers_entry(sh, rec, &entry);
        handler(&entry, data);
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/*
 * An entry read back from disk.  It never outlives the ttl configured
 * now, and it keeps the queue in deadline order when it comes in order
 * (newest first from a snapshot, oldest first from the journal).
 */

ngx_uint_t
ngx_http_influencers_zone_restore(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_t *entry)
{
    uint64_t                        now_ms, expires;
    ngx_uint_t                      rc;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec, *head;

    sh = zone->sh;
    now_ms = ngx_http_influencers_wall_ms();

    if (entry->expires <= now_ms || entry->retry_after > 24 * 60 * 60) {
        return NGX_HTTP_INFLUENCERS_DUPLICATE;
    }

    expires = ngx_min(entry->expires, now_ms + zone->ttl);

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (ngx_http_influencers_lookup(sh, entry->key) != NULL) {
        rc = NGX_HTTP_INFLUENCERS_DUPLICATE;
        goto done;
    }

    rec = ngx_http_influencers_take_free(sh);

    if (rec == NULL) {
        rc = NGX_HTTP_INFLUENCERS_NO_ROOM;
        goto done;
    }

    ngx_memcpy(rec->key, entry->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(rec->fingerprint, entry->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    ngx_memcpy(rec->job_id, entry->job_id, 16);
    ngx_memcpy(rec->influencer_id, entry->influencer_id, 16);
    rec->retry_after = entry->retry_after;
    rec->body = 0;
    rec->expires = expires;
    rec->deadline = ngx_current_msec + (ngx_msec_t) (expires - now_ms);
    rec->state = NGX_HTTP_INFLUENCERS_DONE;

    ngx_http_influencers_index(sh, rec);

    ngx_http_influencers_hold(sh, rec, entry->org_hash);

    if (ngx_queue_empty(&sh->keyed)) {
        ngx_queue_insert_head(&sh->keyed, &rec->queue);

    } else {
        head = ngx_queue_data(ngx_queue_head(&sh->keyed),
                              ngx_http_influencers_record_t, queue);

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


/* FNV-1a: orgs are authenticated, so no one picks a name to collide */

uint64_t
ngx_http_influencers_org_hash(u_char *org, size_t len)
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
        shm_zone = ngx_http_influencers_next_zone(cycle, shm_zone);
    } while (shm_zone && shm_zone->data == NULL);

    return shm_zone ? shm_zone->data : NULL;
}


static void
ngx_http_influencers_fill(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_claim_t *claim)
{
    if (claim->idem) {
        ngx_memcpy(rec->key, claim->idem, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    }

    ngx_memcpy(rec->fingerprint, claim->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);
    rec->body = claim->body;
    rec->keyed = 0;
}


/* what a replay answers: the entry's job, as the first answer showed it */

static void
ngx_http_influencers_answer(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_accept_t *acc)
{
    ngx_memcpy(acc->job_id, rec->job_id, 16);
    ngx_memcpy(acc->influencer_id, rec->influencer_id, 16);
    acc->retry_after = rec->retry_after;
    acc->expires = (time_t) (rec->expires / 1000);
}


uint64_t
ngx_http_influencers_wall_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


static void
ngx_http_influencers_next_ulid(ngx_http_influencers_shctx_t *sh,
    u_char *random, u_char *out)
{
    uint64_t    ms;
    ngx_int_t   i;

    ms = ngx_http_influencers_wall_ms();

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


static ngx_http_influencers_record_t *
ngx_http_influencers_lookup(ngx_http_influencers_shctx_t *sh, u_char *key)
{
    uint32_t                        no;
    ngx_http_influencers_record_t  *rec;

    no = sh->buckets[ngx_http_influencers_bucket(sh, key, sh->nbuckets)];

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
ngx_http_influencers_index(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec)
{
    uint32_t  *bucket;

    bucket = &sh->buckets[ngx_http_influencers_bucket(sh, rec->key,
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

    for (shm_zone = ngx_http_influencers_next_zone(old, NULL);
         shm_zone;
         shm_zone = ngx_http_influencers_next_zone(old, shm_zone))
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
ngx_http_influencers_next_zone(ngx_cycle_t *cycle, ngx_shm_zone_t *prev)
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


