
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_redis.h"
#include "ngx_http_influencers_store.h"


/*
 * In fleet mode a keyed request is claimed twice: in the zone first, which
 * makes it one request per key on this node, answers what this node has
 * seen (replays, conflicts) without a round trip, and holds the org's
 * share; then in Redis, which makes it one request per key in the fleet.
 * Whatever Redis answers, the zone's claim is made to agree with it: the
 * job Redis holds for the key is the key's job on every node.
 */

typedef struct {
    ngx_http_request_t                 *request;
    ngx_http_influencers_zone_t        *zone;
    ngx_http_influencers_accept_t      *acc;
    ngx_http_influencers_store_pt       handler;
    ngx_http_influencers_redis_op_t     op;
    unsigned                            fleet:1;    /* Redis holds it */
    unsigned                            waiting:1;  /* for Redis */
    unsigned                            claiming:1; /* ... a claim's answer */
} ngx_http_influencers_store_ctx_t;


static ngx_http_influencers_store_e ngx_http_influencers_store_zone(
    ngx_int_t rc);
static void ngx_http_influencers_claimed(ngx_http_influencers_redis_op_t *op);
static void ngx_http_influencers_finished(
    ngx_http_influencers_redis_op_t *op);
static ngx_http_influencers_store_e ngx_http_influencers_redis_failed(
    ngx_http_influencers_store_ctx_t *sc);
static void ngx_http_influencers_store_owed(
    ngx_http_influencers_store_ctx_t *sc, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_outcome_e outcome,
    ngx_http_influencers_finish_t *fin);


ngx_http_influencers_store_e
ngx_http_influencers_store_claim(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_ctx_t        *ctx;
    ngx_http_influencers_entry_t      *job;
    ngx_http_influencers_store_ctx_t  *sc;

    rc = ngx_http_influencers_zone_claim(zone, claim, acc,
                                         r->connection->log);

    /* a request without a key, or one this node answers itself */

    if ((rc != NGX_HTTP_INFLUENCERS_CLAIM_NEW
         && rc != NGX_HTTP_INFLUENCERS_CLAIM_RESEND)
        || zone->redis == NULL || claim->idem == NULL)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers store: the zone answers alone (%i)%s",
                       rc, zone->redis ? ", Redis not asked" : "");

        return ngx_http_influencers_store_zone(rc);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    sc = ngx_pcalloc(r->pool, sizeof(ngx_http_influencers_store_ctx_t));
    if (sc == NULL) {
        ngx_http_influencers_zone_abandon(zone, acc);
        return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    }

    ctx->store = sc;

    sc->request = r;
    sc->zone = zone;
    sc->acc = acc;
    sc->handler = handler;

    ngx_memcpy(sc->op.key, claim->key, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(sc->op.fingerprint, claim->fingerprint,
               NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(sc->op.token, claim->random + 10 + 16,
               NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    sc->op.org_hash = claim->org_hash;
    sc->op.handler = ngx_http_influencers_claimed;
    sc->op.data = sc;
    sc->op.log = r->connection->log;

    /* the job the key gets if it is free: the zone's */

    job = &sc->op.job;
    ngx_memcpy(job->job_id, acc->job_id, 16);
    ngx_memcpy(job->influencer_id, acc->influencer_id, 16);
    ngx_memcpy(job->request_id, acc->request_id, 16);
    job->gender = (u_char) acc->gender;
    job->age_range = (u_char) acc->age_range;
    job->retry_after = (uint32_t) acc->retry_after;

    ngx_http_influencers_zone_count(zone, NGX_HTTP_INFLUENCERS_COUNT_OP);

    rc = ngx_http_influencers_redis_claim(zone, &sc->op, zone->lease);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers store: claim sent to Redis: %i", rc);

    switch (rc) {

    case NGX_OK:
        sc->waiting = 1;
        sc->claiming = 1;
        return NGX_HTTP_INFLUENCERS_STORE_AGAIN;

    case NGX_DECLINED:
        return ngx_http_influencers_redis_failed(sc);

    default:
        ngx_http_influencers_zone_abandon(zone, acc);
        return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    }
}


static ngx_http_influencers_store_e
ngx_http_influencers_store_zone(ngx_int_t rc)
{
    switch (rc) {

    case NGX_HTTP_INFLUENCERS_CLAIM_NEW:
        return NGX_HTTP_INFLUENCERS_STORE_NEW;

    case NGX_HTTP_INFLUENCERS_CLAIM_RESEND:
        return NGX_HTTP_INFLUENCERS_STORE_RESEND;

    case NGX_HTTP_INFLUENCERS_CLAIM_REPLAY:
        return NGX_HTTP_INFLUENCERS_STORE_REPLAY;

    case NGX_HTTP_INFLUENCERS_CLAIM_BUSY:
        return NGX_HTTP_INFLUENCERS_STORE_BUSY;

    case NGX_HTTP_INFLUENCERS_CLAIM_MISMATCH:
        return NGX_HTTP_INFLUENCERS_STORE_MISMATCH;

    case NGX_HTTP_INFLUENCERS_CLAIM_OVER_SHARE:
        return NGX_HTTP_INFLUENCERS_STORE_OVER_SHARE;

    default: /* NGX_HTTP_INFLUENCERS_CLAIM_FULL */
        return NGX_HTTP_INFLUENCERS_STORE_FULL;
    }
}


/* Redis's answer to the claim: the zone's claim follows it */

static void
ngx_http_influencers_claimed(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_store_ctx_t  *sc = op->data;

    ngx_http_influencers_store_e   result;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers store: Redis answered the claim: %i",
                   op->rc);

    sc->waiting = 0;
    sc->claiming = 0;

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_REDIS_NEW:
        /* the key was free in the fleet: it has the zone's job now */
        sc->fleet = 1;
        result = sc->acc->resend ? NGX_HTTP_INFLUENCERS_STORE_RESEND
                                 : NGX_HTTP_INFLUENCERS_STORE_NEW;
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_RESEND:
        /* the key's job in doubt, wherever it was first sent: again */
        sc->fleet = 1;
        ngx_http_influencers_zone_adopt_job(sc->zone, sc->acc, &op->entry);
        result = NGX_HTTP_INFLUENCERS_STORE_RESEND;
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_DONE:
        /* accepted on another node: cached here, replayed from now on */
        ngx_http_influencers_zone_adopt(sc->zone, sc->acc, &op->entry);
        result = NGX_HTTP_INFLUENCERS_STORE_REPLAY;
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_BUSY:
        ngx_http_influencers_zone_abandon(sc->zone, sc->acc);
        result = NGX_HTTP_INFLUENCERS_STORE_BUSY;
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_MISMATCH:
        ngx_http_influencers_zone_abandon(sc->zone, sc->acc);
        result = NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
        break;

    default:
        result = ngx_http_influencers_redis_failed(sc);
        break;
    }

    sc->handler(sc->request, result);
}


/*
 * Redis out of reach: fail closed, or, where the operator chose it, go on
 * with the zone alone, which may let another node take the same key.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_redis_failed(ngx_http_influencers_store_ctx_t *sc)
{
    static time_t  logged;

    ngx_http_influencers_zone_count(sc->zone,
                                     NGX_HTTP_INFLUENCERS_COUNT_FAILURE);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, sc->op.log, 0,
                   "influencers store: Redis cannot be reached: %s",
                   sc->zone->fallback ? "the zone alone decides"
                                      : "503, the claim abandoned");

    if (sc->zone->fallback) {
        ngx_http_influencers_zone_count(sc->zone,
                                         NGX_HTTP_INFLUENCERS_COUNT_FALLBACK);

        if (logged != ngx_time() / 60) {
            logged = ngx_time() / 60;
            ngx_log_error(NGX_LOG_WARN, sc->op.log, 0,
                          "influencers zone \"%V\": Redis cannot be reached, "
                          "falling back to the local zone (on_error=local): "
                          "a retry on another node may create a second job "
                          "(logged once a minute)", &sc->zone->name);
        }

        return sc->acc->resend ? NGX_HTTP_INFLUENCERS_STORE_RESEND
                               : NGX_HTTP_INFLUENCERS_STORE_NEW;
    }

    ngx_http_influencers_zone_abandon(sc->zone, sc->acc);

    return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
}


/*
 * The forward's outcome, in the zone, then in Redis: an entry every node
 * replays, a job kept in doubt, or a key released.  What Redis is owed is
 * kept in the zone first, so that it reaches Redis whatever happens to
 * this request or this worker.  A handler waits for Redis's answer, at
 * most its command timeout; without one (a request that is going), the
 * zone's copy is sent and nobody waits.
 */

ngx_http_influencers_store_e
ngx_http_influencers_store_finish(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_accept_t *acc,
    ngx_http_influencers_outcome_e outcome,
    ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_ctx_t        *ctx;
    ngx_http_influencers_finish_t      fin;
    ngx_http_influencers_store_ctx_t  *sc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);
    sc = ctx->store;

    ngx_http_influencers_zone_finish(zone, acc, outcome, sc && sc->fleet,
                                     r->connection->log);

    if (sc == NULL || !sc->fleet) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers store: finished in the zone alone "
                       "(outcome %d)", (int) outcome);

        return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
    }

    ngx_http_influencers_store_owed(sc, zone, acc, outcome, &fin);

    ngx_http_influencers_zone_count(zone, NGX_HTTP_INFLUENCERS_COUNT_OP);

    if (handler == NULL) {
        (void) ngx_http_influencers_redis_finish(zone, NULL, &fin);
        return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
    }

    sc->handler = handler;
    sc->op.handler = ngx_http_influencers_finished;

    rc = ngx_http_influencers_redis_finish(zone, &sc->op, &fin);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers store: finish '%c' sent to Redis: %i",
                   fin.outcome, rc);

    if (rc == NGX_OK) {
        sc->waiting = 1;
        return NGX_HTTP_INFLUENCERS_STORE_AGAIN;
    }

    /*
     * The zone keeps it: a worker sends it again once Redis can be
     * reached.  The partner hears of its job now.
     */

    ngx_http_influencers_zone_count(zone,
                                     NGX_HTTP_INFLUENCERS_COUNT_FAILURE);

    return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
}


/* what the finish script is sent for this outcome */

static void
ngx_http_influencers_store_owed(ngx_http_influencers_store_ctx_t *sc,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_accept_t *acc,
    ngx_http_influencers_outcome_e outcome, ngx_http_influencers_finish_t *fin)
{
    ngx_http_influencers_entry_t  entry;

    ngx_memzero(fin, sizeof(ngx_http_influencers_finish_t));

    ngx_memcpy(fin->key, sc->op.key, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    fin->org_hash = sc->op.org_hash;
    ngx_memcpy(fin->token, sc->op.token, NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    ngx_memcpy(fin->job_id, acc->job_id, 16);
    fin->ttl = zone->ttl;
    fin->expires = ngx_http_influencers_wall_ms() + zone->ttl;

    switch (outcome) {

    case NGX_HTTP_INFLUENCERS_OUTCOME_ACCEPTED:
        fin->outcome = 'A';

        ngx_memzero(&entry, sizeof(ngx_http_influencers_entry_t));
        ngx_memcpy(entry.job_id, acc->job_id, 16);
        ngx_memcpy(entry.influencer_id, acc->influencer_id, 16);
        ngx_memcpy(entry.request_id, acc->request_id, 16);
        entry.gender = (u_char) acc->gender;
        entry.age_range = (u_char) acc->age_range;
        entry.retry_after = (uint32_t) acc->retry_after;

        /* the zone's record may have gone to its lease: the job stands */
        entry.expires = acc->expires_ms ? acc->expires_ms : fin->expires;
        fin->expires = entry.expires;

        fin->value_len = (uint32_t) ngx_http_influencers_redis_accepted(
                                        fin->value, sc->op.fingerprint,
                                        &entry);
        break;

    case NGX_HTTP_INFLUENCERS_OUTCOME_FAILED:
        fin->outcome = 'F';
        break;

    default: /* NGX_HTTP_INFLUENCERS_OUTCOME_UNKNOWN */
        fin->outcome = 'U';
        break;
    }
}


static void
ngx_http_influencers_finished(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_store_ctx_t  *sc = op->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers store: Redis answered the finish: %i",
                   op->rc);

    sc->waiting = 0;

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_REDIS_FINISHED:
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_STALE:

        /*
         * Another claim's, which is no matter for a failure or a doubt;
         * for an acceptance, another job holds the key: Redis lost it.
         */

        if (sc->acc->landed) {
            ngx_http_influencers_zone_count(sc->zone,
                                            NGX_HTTP_INFLUENCERS_COUNT_STALE);
            ngx_http_influencers_zone_forget(sc->zone, sc->acc);
            ngx_log_error(NGX_LOG_ERR, op->log, 0,
                          "influencers zone \"%V\": Redis holds another job "
                          "for the key of the job just accepted: it lost "
                          "the key (a restart without persistence, an "
                          "eviction)", &sc->zone->name);
        }

        break;

    default:
        /* the zone keeps it, for the next try */
        ngx_http_influencers_zone_count(sc->zone,
                                         NGX_HTTP_INFLUENCERS_COUNT_FAILURE);
        break;
    }

    sc->handler(sc->request, NGX_HTTP_INFLUENCERS_STORE_FINISHED);
}


/*
 * The request goes while it waits for Redis: its answer must not reach
 * it.  A claim's local half goes with it (Redis's, if it was applied, is
 * released by the client); a finish stays owed in the zone.
 */

void
ngx_http_influencers_store_cleanup(ngx_http_request_t *r)
{
    ngx_http_influencers_ctx_t        *ctx;
    ngx_http_influencers_store_ctx_t  *sc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);
    sc = ctx ? ctx->store : NULL;

    if (sc == NULL || !sc->waiting) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers store: the request goes while it waits for "
                   "Redis's %s", sc->claiming ? "claim" : "finish");

    ngx_http_influencers_redis_cancel(&sc->op);
    sc->waiting = 0;

    if (sc->claiming) {
        sc->claiming = 0;
        ngx_http_influencers_zone_abandon(sc->zone, sc->acc);
    }
}
