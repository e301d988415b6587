
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"


/*
 * Records have one fixed size and are all carved out of the slab when the
 * zone is created: a request never allocates shared memory, and how many
 * jobs a zone holds is known in advance.  A record is in exactly one queue:
 *
 *   free      unused;
 *   inflight  being forwarded (a lease: deadline is the lease's end);
 *   keyed     accepted with an Idempotency-Key (deadline is its expiry),
 *             in the rbtree too, never evicted before it expires;
 *   jobs      accepted without a key, failed, or lost: evictable, LRU.
 *
 * An in-flight record with a key is in the rbtree as well.
 */

#define NGX_HTTP_INFLUENCERS_FREE       0
#define NGX_HTTP_INFLUENCERS_FORWARDING 1
#define NGX_HTTP_INFLUENCERS_DONE       2
#define NGX_HTTP_INFLUENCERS_FAILED     3
#define NGX_HTTP_INFLUENCERS_LOST       4


typedef struct {
    ngx_rbtree_node_t             node;
    ngx_queue_t                   queue;
    u_char                        key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        job_id[16];
    u_char                        influencer_id[16];
    u_char                        project[16];
    ngx_msec_t                    deadline;
    uint64_t                      expires;      /* wall clock, ms */
    uint16_t                      retry_after;
    u_char                        state;
    u_char                        keyed;
    u_char                        gender;
    u_char                        age_range;
    u_char                        org_len;
    u_char                        prompt_len;
    u_char                        org[NGX_HTTP_INFLUENCERS_ORG_MAX];
    u_char                        prompt[NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES];
} ngx_http_influencers_record_t;


typedef struct ngx_http_influencers_shctx_s {
    uint32_t                      magic;
    uint32_t                      version;
    size_t                        record_size;
    size_t                        zone_size;

    ngx_rbtree_t                  rbtree;
    ngx_rbtree_node_t             sentinel;

    ngx_queue_t                   free;
    ngx_queue_t                   inflight;
    ngx_queue_t                   keyed;
    ngx_queue_t                   jobs;

    ngx_uint_t                    records;
    ngx_uint_t                    nfree;
    ngx_uint_t                    nkeyed;
    ngx_uint_t                    ninflight;

    /* ULIDs stay sorted across workers: the last one, under the lock */
    uint64_t                      ulid_ms;
    u_char                        ulid_rand[10];

    time_t                        full_logged;
    ngx_msec_t                    swept;

    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_shctx_t;


static ngx_int_t ngx_http_influencers_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_influencers_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_influencers_record_t *ngx_http_influencers_lookup(
    ngx_http_influencers_shctx_t *sh, u_char *key);
static ngx_http_influencers_record_t *ngx_http_influencers_alloc(
    ngx_http_influencers_shctx_t *sh, ngx_msec_t now);
static void ngx_http_influencers_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_msec_t now);
static ngx_uint_t ngx_http_influencers_expire(
    ngx_http_influencers_shctx_t *sh, ngx_http_influencers_record_t *rec,
    ngx_msec_t now);
static void ngx_http_influencers_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec);
static void ngx_http_influencers_next_ulid(ngx_http_influencers_shctx_t *sh,
    u_char *random, u_char *out);
static uint64_t ngx_http_influencers_wall_ms(void);
static void ngx_http_influencers_fill(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_claim_t *claim);
static void ngx_http_influencers_zone_load(ngx_http_influencers_zone_t *zone,
    ngx_log_t *log);
static ngx_shm_zone_t *ngx_http_influencers_next_zone(ngx_cycle_t *cycle,
    ngx_shm_zone_t *prev);


#define ngx_http_influencers_rbtree_key(key)                                  \
    (*(ngx_rbtree_key_t *) (void *) (key))


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
    ngx_http_influencers_record_t  *rec;

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

        return NGX_OK;
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

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_http_influencers_rbtree_insert);
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

    /* carve every record now; running out later is a 503, not a log line */

    shpool->log_nomem = 0;

    for ( ;; ) {
        rec = ngx_slab_calloc(shpool, sizeof(ngx_http_influencers_record_t));
        if (rec == NULL) {
            break;
        }

        ngx_queue_insert_head(&sh->free, &rec->queue);
        sh->records++;
    }

    sh->nfree = sh->records;

    if (sh->records == 0) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "influencers zone \"%V\" is too small for one job",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool = shpool;

    if (zone->state_file.len) {
        ngx_http_influencers_zone_load(zone, shm_zone->shm.log);
    }

    return NGX_OK;
}


/*
 * The one critical section of a request: look the key up, and either
 * answer from the entry or claim it with a new job, atomically across
 * workers.
 */

ngx_int_t
ngx_http_influencers_zone_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim, ngx_http_influencers_accept_t *acc,
    ngx_log_t *log)
{
    ngx_int_t                       rc;
    ngx_msec_t                      now;
    ngx_uint_t                      log_full;
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    now = ngx_current_msec;
    log_full = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (claim->idem) {
        rec = ngx_http_influencers_lookup(sh, claim->idem);

        if (rec && ngx_http_influencers_expire(sh, rec, now)) {
            rec = NULL;
        }

        if (rec) {
            if (ngx_memcmp(rec->fingerprint, claim->fingerprint,
                           NGX_HTTP_INFLUENCERS_SHA256_LEN)
                != 0)
            {
                sh->counters.mismatches++;
                rc = NGX_HTTP_INFLUENCERS_CLAIM_MISMATCH;

            } else if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING) {
                sh->counters.conflicts++;
                rc = NGX_HTTP_INFLUENCERS_CLAIM_BUSY;

            } else {
                sh->counters.replays++;
                ngx_memcpy(acc->job_id, rec->job_id, 16);
                ngx_memcpy(acc->influencer_id, rec->influencer_id, 16);
                acc->retry_after = rec->retry_after;
                acc->expires = (time_t) (rec->expires / 1000);
                rc = NGX_HTTP_INFLUENCERS_CLAIM_REPLAY;
            }

            goto done;
        }
    }

    rec = ngx_http_influencers_alloc(sh, now);

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
    rec->retry_after = (uint16_t) acc->retry_after;
    rec->deadline = now + zone->lease;
    rec->expires = 0;
    rec->state = NGX_HTTP_INFLUENCERS_FORWARDING;

    ngx_queue_insert_head(&sh->inflight, &rec->queue);
    sh->ninflight++;

    if (claim->idem) {
        rec->keyed = 1;
        rec->node.key = ngx_http_influencers_rbtree_key(rec->key);
        ngx_rbtree_insert(&sh->rbtree, &rec->node);
    }

    sh->counters.claims++;

    ngx_memcpy(acc->job_id, rec->job_id, 16);
    ngx_memcpy(acc->influencer_id, rec->influencer_id, 16);
    acc->record = rec;

    rc = NGX_HTTP_INFLUENCERS_CLAIM_NEW;

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (log_full) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\" is full: unexpired "
                      "idempotency entries and jobs in flight fill all %ui "
                      "records, answering 503 (logged once a minute)",
                      &zone->name, sh->records);
    }

    return rc;
}


/* the forward's outcome: remembered if accepted, the key released if not */

void
ngx_http_influencers_zone_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_uint_t accepted, ngx_uint_t known)
{
    ngx_http_influencers_shctx_t   *sh;
    ngx_http_influencers_record_t  *rec;

    sh = zone->sh;
    rec = acc->record;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* after a lease expiry the record may belong to another job by now */

    if (rec->state != NGX_HTTP_INFLUENCERS_FORWARDING
        || ngx_memcmp(rec->job_id, acc->job_id, 16) != 0)
    {
        goto done;
    }

    if (!known) {
        /* the partner left before the outcome: let the lease run out */
        goto done;
    }

    ngx_queue_remove(&rec->queue);
    sh->ninflight--;

    if (accepted) {
        sh->counters.accepted++;
        rec->state = NGX_HTTP_INFLUENCERS_DONE;

        if (rec->keyed) {
            rec->deadline = ngx_current_msec + zone->ttl;
            rec->expires = ngx_http_influencers_wall_ms() + zone->ttl;
            acc->expires = (time_t) (rec->expires / 1000);
            ngx_queue_insert_head(&sh->keyed, &rec->queue);
            sh->nkeyed++;

        } else {
            ngx_queue_insert_head(&sh->jobs, &rec->queue);
        }

    } else {
        sh->counters.failed++;
        rec->state = NGX_HTTP_INFLUENCERS_FAILED;

        if (rec->keyed) {
            sh->counters.releases++;
            ngx_http_influencers_unkey(sh, rec);
        }

        ngx_queue_insert_head(&sh->jobs, &rec->queue);
    }

done:

    ngx_shmtx_unlock(&zone->shpool->mutex);
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
    st->record_size = sh->record_size;
    st->counters = sh->counters;

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
    if ((ngx_msec_int_t) (now - rec->deadline) < 0) {
        return 0;
    }

    ngx_queue_remove(&rec->queue);

    if (rec->state == NGX_HTTP_INFLUENCERS_FORWARDING) {
        sh->counters.lease_expiries++;
        sh->ninflight--;
        rec->state = NGX_HTTP_INFLUENCERS_LOST;

    } else {
        sh->nkeyed--;
    }

    ngx_http_influencers_unkey(sh, rec);
    ngx_queue_insert_head(&sh->jobs, &rec->queue);

    return 1;
}


static void
ngx_http_influencers_unkey(ngx_http_influencers_shctx_t *sh,
    ngx_http_influencers_record_t *rec)
{
    if (rec->keyed) {
        ngx_rbtree_delete(&sh->rbtree, &rec->node);
        rec->keyed = 0;
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

    if (!ngx_queue_empty(&sh->free)) {
        q = ngx_queue_head(&sh->free);
        ngx_queue_remove(q);
        sh->nfree--;
        return ngx_queue_data(q, ngx_http_influencers_record_t, queue);
    }

    if (!ngx_queue_empty(&sh->keyed)) {
        rec = ngx_queue_data(ngx_queue_last(&sh->keyed),
                             ngx_http_influencers_record_t, queue);
        ngx_http_influencers_expire(sh, rec, now);
    }

    if (!ngx_queue_empty(&sh->inflight)) {
        rec = ngx_queue_data(ngx_queue_last(&sh->inflight),
                             ngx_http_influencers_record_t, queue);
        ngx_http_influencers_expire(sh, rec, now);
    }

    /*
     * Deadlines follow the queues' order only while ttl and lease stay
     * the same: after a reload that shortened them, or entries read from a
     * state file, an expired record may sit anywhere.  A full zone is swept
     * whole, at most once a second, so that those make room too.
     */

    if (ngx_queue_empty(&sh->jobs)
        && (ngx_msec_int_t) (now - sh->swept) >= 1000)
    {
        sh->swept = now;
        ngx_http_influencers_sweep(sh, &sh->keyed, now);
        ngx_http_influencers_sweep(sh, &sh->inflight, now);
    }

    if (ngx_queue_empty(&sh->jobs)) {
        return NULL;
    }

    q = ngx_queue_last(&sh->jobs);
    ngx_queue_remove(q);

    return ngx_queue_data(q, ngx_http_influencers_record_t, queue);
}


static void
ngx_http_influencers_sweep(ngx_http_influencers_shctx_t *sh,
    ngx_queue_t *queue, ngx_msec_t now)
{
    ngx_queue_t                    *q, *next;
    ngx_http_influencers_record_t  *rec;

    for (q = ngx_queue_head(queue);
         q != ngx_queue_sentinel(queue);
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_http_influencers_record_t, queue);
        (void) ngx_http_influencers_expire(sh, rec, now);
    }
}


static void
ngx_http_influencers_fill(ngx_http_influencers_record_t *rec,
    ngx_http_influencers_claim_t *claim)
{
    ngx_http_influencers_job_t  *job;

    job = claim->job;

    if (claim->idem) {
        ngx_memcpy(rec->key, claim->idem, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    }

    ngx_memcpy(rec->fingerprint, claim->fingerprint,
               NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(rec->project, job->project, 16);
    rec->org_len = (u_char) job->org.len;
    ngx_memcpy(rec->org, job->org.data, job->org.len);
    rec->gender = (u_char) job->gender;
    rec->age_range = (u_char) job->age_range;
    rec->prompt_len = (u_char) job->prompt_len;
    ngx_memcpy(rec->prompt, job->prompt, job->prompt_len);
    rec->keyed = 0;
}


static uint64_t
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
    ngx_int_t                       rc;
    ngx_rbtree_key_t                hash;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_influencers_record_t  *rec;

    hash = ngx_http_influencers_rbtree_key(key);
    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        rec = (ngx_http_influencers_record_t *) node;
        rc = ngx_memcmp(key, rec->key, NGX_HTTP_INFLUENCERS_SHA256_LEN);

        if (rc == 0) {
            return rec;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_influencers_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_influencers_record_t  *a, *b;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            a = (ngx_http_influencers_record_t *) node;
            b = (ngx_http_influencers_record_t *) temp;

            p = (ngx_memcmp(a->key, b->key, NGX_HTTP_INFLUENCERS_SHA256_LEN)
                 < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
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


/*
 * The state file keeps the unexpired idempotency entries across a stop
 * and a start.  It is written whole to a temporary name and renamed; it is
 * read only if its header, its size and its checksum agree, and then every
 * record is checked again before it goes into the zone.
 */

#define NGX_HTTP_INFLUENCERS_STATE_MAGIC  0x53464e49    /* "INFS" */
#define NGX_HTTP_INFLUENCERS_STATE_MAX    (4 * 1024 * 1024)  /* entries */

#define ngx_http_influencers_payload(rec)                                     \
    ((u_char *) (rec) + offsetof(ngx_http_influencers_record_t, key))

#define NGX_HTTP_INFLUENCERS_PAYLOAD                                          \
    (sizeof(ngx_http_influencers_record_t)                                    \
     - offsetof(ngx_http_influencers_record_t, key))


typedef struct {
    uint32_t                      magic;
    uint32_t                      version;
    uint32_t                      payload;
    uint32_t                      count;
    uint32_t                      crc32;
    uint32_t                      reserved;
} ngx_http_influencers_state_header_t;


static void
ngx_http_influencers_zone_save(ngx_http_influencers_zone_t *zone,
    ngx_log_t *log)
{
    u_char                               *buf, *p;
    size_t                                size;
    uint64_t                              now_ms;
    ngx_fd_t                              fd;
    ngx_str_t                             tmp;
    ngx_queue_t                          *q;
    ngx_http_influencers_shctx_t         *sh;
    ngx_http_influencers_record_t        *rec;
    ngx_http_influencers_state_header_t  *hdr;

    sh = zone->sh;
    now_ms = ngx_http_influencers_wall_ms();

    size = sizeof(ngx_http_influencers_state_header_t)
           + sh->nkeyed * NGX_HTTP_INFLUENCERS_PAYLOAD;

    buf = ngx_alloc(size, log);
    if (buf == NULL) {
        return;
    }

    hdr = (ngx_http_influencers_state_header_t *) buf;
    ngx_memzero(hdr, sizeof(ngx_http_influencers_state_header_t));
    p = buf + sizeof(ngx_http_influencers_state_header_t);

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&sh->keyed);
         q != ngx_queue_sentinel(&sh->keyed);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_influencers_record_t, queue);

        if (rec->expires <= now_ms || hdr->count == sh->nkeyed) {
            continue;
        }

        p = ngx_cpymem(p, ngx_http_influencers_payload(rec),
                       NGX_HTTP_INFLUENCERS_PAYLOAD);
        hdr->count++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    hdr->magic = NGX_HTTP_INFLUENCERS_STATE_MAGIC;
    hdr->version = NGX_HTTP_INFLUENCERS_ZONE_VERSION;
    hdr->payload = NGX_HTTP_INFLUENCERS_PAYLOAD;
    hdr->crc32 = ngx_crc32_long(buf + sizeof(*hdr), p - buf - sizeof(*hdr));

    tmp.len = zone->state_file.len + sizeof(".tmp") - 1;
    tmp.data = ngx_alloc(tmp.len + 1, log);
    if (tmp.data == NULL) {
        ngx_free(buf);
        return;
    }

    ngx_sprintf(tmp.data, "%V.tmp%Z", &zone->state_file);

    fd = ngx_open_file(tmp.data, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE,
                       NGX_FILE_DEFAULT_ACCESS);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", tmp.data);
        goto done;
    }

    if (ngx_write_fd(fd, buf, p - buf) != p - buf || fsync(fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "influencers: writing the state file \"%s\" failed",
                      tmp.data);
        (void) ngx_close_file(fd);
        (void) ngx_delete_file(tmp.data);
        goto done;
    }

    (void) ngx_close_file(fd);

    if (ngx_rename_file(tmp.data, zone->state_file.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_rename_file_n " \"%s\" to \"%V\" failed",
                      tmp.data, &zone->state_file);
        (void) ngx_delete_file(tmp.data);
        goto done;
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "influencers zone \"%V\": %uD entries saved to \"%V\"",
                  &zone->name, hdr->count, &zone->state_file);

done:

    ngx_free(tmp.data);
    ngx_free(buf);
}


void
ngx_http_influencers_zone_save_all(ngx_cycle_t *cycle)
{
    ngx_shm_zone_t               *shm_zone;
    ngx_http_influencers_zone_t  *zone;

    for (shm_zone = ngx_http_influencers_next_zone(cycle, NULL);
         shm_zone;
         shm_zone = ngx_http_influencers_next_zone(cycle, shm_zone))
    {
        zone = shm_zone->data;

        if (zone && zone->sh && zone->state_file.len) {
            ngx_http_influencers_zone_save(zone, cycle->log);
        }
    }
}


static ngx_int_t
ngx_http_influencers_record_valid(ngx_http_influencers_record_t *rec,
    uint64_t now_ms)
{
    return rec->expires > now_ms
           && rec->expires - now_ms <= (uint64_t) 366 * 24 * 60 * 60 * 1000
           && rec->org_len >= 1 && rec->org_len <= NGX_HTTP_INFLUENCERS_ORG_MAX
           && rec->prompt_len <= NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES
           && rec->gender >= 1 && rec->gender <= 3
           && rec->age_range >= 1 && rec->age_range <= 6;
}


static void
ngx_http_influencers_zone_load(ngx_http_influencers_zone_t *zone,
    ngx_log_t *log)
{
    u_char                               *buf, *p;
    ssize_t                               n;
    uint64_t                              now_ms;
    ngx_fd_t                              fd;
    ngx_uint_t                            i, loaded, full;
    ngx_file_info_t                       fi;
    ngx_http_influencers_shctx_t         *sh;
    ngx_http_influencers_record_t        *rec, tmp;
    ngx_http_influencers_state_header_t  *hdr;

    fd = ngx_open_file(zone->state_file.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "influencers: cannot open the state file \"%V\", "
                          "ignored", &zone->state_file);
        }
        return;
    }

    buf = NULL;

    /* a file from a larger zone is fine: its newest entries are read */

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) < (off_t) sizeof(*hdr)
        || ngx_file_size(&fi) > (off_t) (sizeof(*hdr)
                                         + NGX_HTTP_INFLUENCERS_STATE_MAX
                                           * NGX_HTTP_INFLUENCERS_PAYLOAD))
    {
        goto damaged;
    }

    buf = ngx_alloc(ngx_file_size(&fi), log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));

    if (n != ngx_file_size(&fi)) {
        goto damaged;
    }

    hdr = (ngx_http_influencers_state_header_t *) buf;

    if (hdr->magic != NGX_HTTP_INFLUENCERS_STATE_MAGIC
        || hdr->version != NGX_HTTP_INFLUENCERS_ZONE_VERSION
        || hdr->payload != NGX_HTTP_INFLUENCERS_PAYLOAD
        || (size_t) n != sizeof(*hdr)
                         + (size_t) hdr->count * NGX_HTTP_INFLUENCERS_PAYLOAD
        || hdr->crc32 != ngx_crc32_long(buf + sizeof(*hdr), n - sizeof(*hdr)))
    {
        goto damaged;
    }

    sh = zone->sh;
    now_ms = ngx_http_influencers_wall_ms();
    loaded = 0;
    full = 0;
    p = buf + sizeof(*hdr);

    for (i = 0; i < hdr->count; i++, p += NGX_HTTP_INFLUENCERS_PAYLOAD) {

        ngx_memcpy(ngx_http_influencers_payload(&tmp), p,
                   NGX_HTTP_INFLUENCERS_PAYLOAD);

        if (!ngx_http_influencers_record_valid(&tmp, now_ms)
            || ngx_http_influencers_lookup(sh, tmp.key) != NULL)
        {
            continue;
        }

        if (ngx_queue_empty(&sh->free)) {
            full++;
            continue;
        }

        rec = ngx_queue_data(ngx_queue_head(&sh->free),
                             ngx_http_influencers_record_t, queue);
        ngx_queue_remove(&rec->queue);
        sh->nfree--;

        ngx_memcpy(ngx_http_influencers_payload(rec), p,
                   NGX_HTTP_INFLUENCERS_PAYLOAD);

        rec->state = NGX_HTTP_INFLUENCERS_DONE;
        rec->keyed = 1;
        rec->deadline = ngx_current_msec
                        + (ngx_msec_t) (rec->expires - now_ms);
        rec->node.key = ngx_http_influencers_rbtree_key(rec->key);

        ngx_rbtree_insert(&sh->rbtree, &rec->node);
        ngx_queue_insert_tail(&sh->keyed, &rec->queue);
        sh->nkeyed++;
        loaded++;
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "influencers zone \"%V\": %ui entries loaded from \"%V\"",
                  &zone->name, loaded, &zone->state_file);

    if (full) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\" is too small for the state "
                      "file: its %ui oldest entries were not loaded",
                      &zone->name, full);
    }

    goto done;

damaged:

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "influencers: the state file \"%V\" is damaged or of "
                  "another layout, ignored", &zone->state_file);

done:

    if (buf) {
        ngx_free(buf);
    }

    (void) ngx_close_file(fd);
}
