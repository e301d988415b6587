
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
 * Whatever Redis answers, the zone's claim is made to agree with it.
 */

typedef struct {
    ngx_http_request_t                 *request;
    ngx_http_influencers_zone_t        *zone;
    ngx_http_influencers_accept_t      *acc;
    ngx_http_influencers_store_pt       handler;
    ngx_http_influencers_redis_op_t     op;
    unsigned                            fleet:1;    /* Redis holds it */
} ngx_http_influencers_store_ctx_t;


static ngx_http_influencers_store_e ngx_http_influencers_store_zone(
    ngx_int_t rc);
static void ngx_http_influencers_claimed(ngx_http_influencers_redis_op_t *op);
static void ngx_http_influencers_finished(
    ngx_http_influencers_redis_op_t *op);
static ngx_http_influencers_store_e ngx_http_influencers_redis_failed(
    ngx_http_influencers_store_ctx_t *sc);


ngx_http_influencers_store_e
ngx_http_influencers_store_claim(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_accept_t *acc, ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_ctx_t        *ctx;
    ngx_http_influencers_store_ctx_t  *sc;

    rc = ngx_http_influencers_zone_claim(zone, claim, acc,
                                         r->connection->log);

    /* a request without a key, or one this node answers itself */

    if (rc != NGX_HTTP_INFLUENCERS_CLAIM_NEW
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

    ngx_http_influencers_zone_count(zone, NGX_HTTP_INFLUENCERS_COUNT_OP);

    rc = ngx_http_influencers_redis_claim(zone, &sc->op, zone->lease);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers store: claim sent to Redis: %i", rc);

    switch (rc) {

    case NGX_OK:
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

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_REDIS_NEW:
        sc->fleet = 1;
        result = NGX_HTTP_INFLUENCERS_STORE_NEW;
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

        return NGX_HTTP_INFLUENCERS_STORE_NEW;
    }

    ngx_http_influencers_zone_abandon(sc->zone, sc->acc);

    return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
}


/*
 * The forward's outcome, in the zone, then in Redis while the claim there
 * is still ours: an entry every node replays, or a key released.
 */

ngx_http_influencers_store_e
ngx_http_influencers_store_finish(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_accept_t *acc,
    ngx_http_influencers_outcome_e outcome,
    ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_ctx_t        *ctx;
    ngx_http_influencers_entry_t       entry, *e;
    ngx_http_influencers_store_ctx_t  *sc;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);
    sc = ctx->store;

    ngx_http_influencers_zone_finish(zone, acc,
                               outcome == NGX_HTTP_INFLUENCERS_OUTCOME_ACCEPTED,
                               outcome != NGX_HTTP_INFLUENCERS_OUTCOME_UNKNOWN,
                               sc && sc->fleet, r->connection->log);

    if (sc == NULL || !sc->fleet
        || outcome == NGX_HTTP_INFLUENCERS_OUTCOME_UNKNOWN)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers store: finished in the zone alone "
                       "(outcome %d)%s", (int) outcome,
                       (sc && sc->fleet) ? ", Redis's lease runs out" : "");

        return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
    }

    e = NULL;

    if (outcome == NGX_HTTP_INFLUENCERS_OUTCOME_ACCEPTED) {
        ngx_memzero(&entry, sizeof(ngx_http_influencers_entry_t));
        ngx_memcpy(entry.key, sc->op.key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);
        ngx_memcpy(entry.fingerprint, sc->op.fingerprint,
                   NGX_HTTP_INFLUENCERS_DIGEST_LEN);
        ngx_memcpy(entry.job_id, acc->job_id, 16);
        ngx_memcpy(entry.influencer_id, acc->influencer_id, 16);
        entry.org_hash = sc->op.org_hash;
        entry.retry_after = (uint32_t) acc->retry_after;

        /* the zone's record may have been lost to its lease: still ours */
        entry.expires = acc->expires_ms ? acc->expires_ms
                        : ngx_http_influencers_wall_ms() + zone->ttl;

        e = &entry;
    }

    sc->handler = handler;
    sc->op.handler = ngx_http_influencers_finished;

    ngx_http_influencers_zone_count(zone, NGX_HTTP_INFLUENCERS_COUNT_OP);

    rc = ngx_http_influencers_redis_finish(zone, &sc->op, e, zone->ttl);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers store: %s sent to Redis: %i",
                   e ? "the entry" : "the release", rc);

    if (rc == NGX_OK) {
        return NGX_HTTP_INFLUENCERS_STORE_AGAIN;
    }

    /*
     * The job is the backend's already: the partner hears of it.  The
     * Redis client sends the finish again on its next connection, while
     * the claim there is still this token's; this node replays it.
     */

    ngx_http_influencers_zone_count(zone,
                                     NGX_HTTP_INFLUENCERS_COUNT_FAILURE);

    return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
}


static void
ngx_http_influencers_finished(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_store_ctx_t  *sc = op->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers store: Redis answered the finish: %i",
                   op->rc);

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_REDIS_FINISHED:
        break;

    case NGX_HTTP_INFLUENCERS_REDIS_STALE:
        /* the lease ran out first: another node may have the key now */
        ngx_http_influencers_zone_count(sc->zone,
                                         NGX_HTTP_INFLUENCERS_COUNT_STALE);
        ngx_http_influencers_zone_forget(sc->zone, sc->acc);
        ngx_log_error(NGX_LOG_WARN, op->log, 0,
                      "influencers: the job's claim in Redis expired before "
                      "its forward ended: set \"lease\" above the backend's "
                      "timeouts");
        break;

    default:
        ngx_http_influencers_zone_count(sc->zone,
                                         NGX_HTTP_INFLUENCERS_COUNT_FAILURE);
        break;
    }

    sc->handler(sc->request, NGX_HTTP_INFLUENCERS_STORE_FINISHED);
}

