
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_store.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_state.h"
#include "ngx_http_influencers_redis.h"
#include "ngx_http_influencers_redis_conf.h"


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
    ngx_http_influencers_store_ticket_t      *ticket;
    ngx_http_influencers_store_pt       handler;
    ngx_http_influencers_redis_op_t     op;
    unsigned                            fleet:1;    /* Redis holds it */
    unsigned                            waiting:1;  /* for Redis */
    unsigned                            claiming:1; /* ... a claim's answer */
} ngx_http_influencers_store_ctx_t;


static void ngx_http_influencers_store_claimed(
    ngx_http_influencers_redis_op_t *op);
static void ngx_http_influencers_store_finished(
    ngx_http_influencers_redis_op_t *op);
static ngx_http_influencers_store_e ngx_http_influencers_store_unreachable(
    ngx_http_influencers_store_ctx_t *sc);
static void ngx_http_influencers_store_owed(
    ngx_http_influencers_store_ctx_t *sc, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome,
    ngx_http_influencers_finish_t *fin);


ngx_http_influencers_store_e
ngx_http_influencers_store_claim(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_entry_t      *job;
    ngx_http_influencers_store_e       result;
    ngx_http_influencers_store_ctx_t  *sc;

    ticket->fleet = NULL;

    result = ngx_http_influencers_zone_claim(zone, claim, ticket,
                                             r->connection->log);

    /* a request without a key, or one this node answers itself */

    if ((result != NGX_HTTP_INFLUENCERS_STORE_NEW
         && result != NGX_HTTP_INFLUENCERS_STORE_RESEND)
        || zone->redis == NULL || claim->idem == NULL)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers store: the zone answers alone (%d)%s",
                       (int) result, zone->redis ? ", Redis not asked" : "");

        return result;
    }

    sc = ngx_pcalloc(r->pool, sizeof(ngx_http_influencers_store_ctx_t));
    if (sc == NULL) {
        ngx_http_influencers_zone_abandon(zone, ticket);
        return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    }

    ticket->fleet = sc;

    sc->request = r;
    sc->zone = zone;
    sc->ticket = ticket;
    sc->handler = handler;

    ngx_memcpy(sc->op.key, claim->key, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(sc->op.fingerprint, claim->fingerprint,
               NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(sc->op.token, claim->random.token,
               NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    sc->op.org_hash = claim->org_hash;
    sc->op.handler = ngx_http_influencers_store_claimed;
    sc->op.data = sc;
    sc->op.log = r->connection->log;

    /* the job the key gets if it is free: the zone's */

    job = &sc->op.job;
    ngx_memcpy(job->job_id, ticket->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(job->influencer_id, ticket->influencer_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(job->request_id, ticket->request_id,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    job->gender = (u_char) ticket->gender;
    job->age_range = (u_char) ticket->age_range;
    job->retry_after = (uint32_t) ticket->retry_after;

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
        return ngx_http_influencers_store_unreachable(sc);

    default:
        ngx_http_influencers_zone_abandon(zone, ticket);
        return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    }
}


/* Redis's answer to the claim: the zone's claim follows it */

static void
ngx_http_influencers_store_claimed(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_store_ctx_t  *sc = op->data;

    ngx_http_influencers_store_e   result;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers store: Redis answered the claim: %i",
                   op->rc);

    sc->waiting = 0;
    sc->claiming = 0;

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_STORE_NEW:
        /* the key was free in the fleet: it has the zone's job now */
        sc->fleet = 1;
        result = sc->ticket->resend ? NGX_HTTP_INFLUENCERS_STORE_RESEND
                                 : NGX_HTTP_INFLUENCERS_STORE_NEW;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_RESEND:
        /* the key's job in doubt, wherever it was first sent: again */
        sc->fleet = 1;
        ngx_http_influencers_zone_adopt_job(sc->zone, sc->ticket, &op->entry);
        result = NGX_HTTP_INFLUENCERS_STORE_RESEND;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_REPLAY:
        /* accepted on another node: cached here, replayed from now on */
        ngx_http_influencers_zone_adopt(sc->zone, sc->ticket, &op->entry);
        result = NGX_HTTP_INFLUENCERS_STORE_REPLAY;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_BUSY:
        ngx_http_influencers_zone_abandon(sc->zone, sc->ticket);
        result = NGX_HTTP_INFLUENCERS_STORE_BUSY;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_MISMATCH:
        ngx_http_influencers_zone_abandon(sc->zone, sc->ticket);
        result = NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
        break;

    default:
        result = ngx_http_influencers_store_unreachable(sc);
        break;
    }

    sc->handler(sc->request, result);
}


/*
 * Redis out of reach: fail closed, or, where the operator chose it, go on
 * with the zone alone, which may let another node take the same key.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_store_unreachable(ngx_http_influencers_store_ctx_t *sc)
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

        return sc->ticket->resend ? NGX_HTTP_INFLUENCERS_STORE_RESEND
                               : NGX_HTTP_INFLUENCERS_STORE_NEW;
    }

    ngx_http_influencers_zone_abandon(sc->zone, sc->ticket);

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
    ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome,
    ngx_http_influencers_store_pt handler)
{
    ngx_int_t                          rc;
    ngx_http_influencers_finish_t      fin;
    ngx_http_influencers_store_ctx_t  *sc;

    sc = ticket->fleet;

    ngx_http_influencers_zone_finish(zone, ticket, outcome,
                                     (sc && sc->fleet)
                                     ? NGX_HTTP_INFLUENCERS_REDIS_HOLDS
                                     : NGX_HTTP_INFLUENCERS_ZONE_HOLDS,
                                     r->connection->log);

    if (sc == NULL || !sc->fleet) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers store: finished in the zone alone "
                       "(outcome %d)", (int) outcome);

        return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
    }

    ngx_http_influencers_store_owed(sc, zone, ticket, outcome, &fin);

    ngx_http_influencers_zone_count(zone, NGX_HTTP_INFLUENCERS_COUNT_OP);

    if (handler == NULL) {
        (void) ngx_http_influencers_redis_finish(zone, NULL, &fin);
        return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
    }

    sc->handler = handler;
    sc->op.handler = ngx_http_influencers_store_finished;

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
    ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome, ngx_http_influencers_finish_t *fin)
{
    ngx_http_influencers_entry_t  entry;

    ngx_memzero(fin, sizeof(ngx_http_influencers_finish_t));

    ngx_memcpy(fin->key, sc->op.key, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    fin->org_hash = sc->op.org_hash;
    ngx_memcpy(fin->token, sc->op.token, NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    ngx_memcpy(fin->job_id, ticket->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    fin->ttl = zone->ttl;
    fin->expires = ngx_http_influencers_zone_wall_ms() + zone->ttl;

    if (outcome == NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED) {
        fin->outcome = 'A';

        ngx_memzero(&entry, sizeof(ngx_http_influencers_entry_t));
        ngx_memcpy(entry.job_id, ticket->job_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(entry.influencer_id, ticket->influencer_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(entry.request_id, ticket->request_id,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        entry.gender = (u_char) ticket->gender;
        entry.age_range = (u_char) ticket->age_range;
        entry.retry_after = (uint32_t) ticket->retry_after;

        /* the zone's record may have gone to its lease: the job stands */
        entry.expires = ticket->expires_ms ? ticket->expires_ms : fin->expires;
        fin->expires = entry.expires;

        fin->value_len = (uint32_t) ngx_http_influencers_redis_accepted(
                                        fin->value, sc->op.fingerprint,
                                        &entry);

        return;
    }

    fin->outcome = ngx_http_influencers_forward_in_doubt(outcome) ? 'U' : 'F';
}


static void
ngx_http_influencers_store_finished(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_store_ctx_t  *sc = op->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers store: Redis answered the finish: %i",
                   op->rc);

    sc->waiting = 0;

    switch (op->rc) {

    case NGX_HTTP_INFLUENCERS_STORE_FINISHED:
        break;

    case NGX_HTTP_INFLUENCERS_STORE_STALE:

        /*
         * Another claim's, which is no matter for a failure or a doubt;
         * for an acceptance, another job holds the key: Redis lost it.
         */

        if (sc->ticket->landed) {
            ngx_http_influencers_zone_count(sc->zone,
                                            NGX_HTTP_INFLUENCERS_COUNT_STALE);
            ngx_http_influencers_zone_forget(sc->zone, sc->ticket);
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
ngx_http_influencers_store_cleanup(ngx_http_influencers_store_ticket_t *ticket)
{
    ngx_http_influencers_store_ctx_t  *sc;

    sc = ticket->fleet;

    if (sc == NULL || !sc->waiting) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, sc->op.log, 0,
                   "influencers store: the request goes while it waits for "
                   "Redis's %s", sc->claiming ? "claim" : "finish");

    ngx_http_influencers_redis_cancel(&sc->op);
    sc->waiting = 0;

    if (sc->claiming) {
        sc->claiming = 0;
        ngx_http_influencers_zone_abandon(sc->zone, sc->ticket);
    }
}


/*
 * influencers_zone zone=name:size [ttl=time] [lease=time] [org_share=N%]
 *     [state=path]
 */

char *
ngx_http_influencers_store_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char                       *p;
    ssize_t                       size;
    ngx_str_t                    *value, name, s;
    ngx_int_t                     ttl, lease, share;
    ngx_str_t                     state;
    ngx_uint_t                    i;
    ngx_http_influencers_zone_t  *zone;

    value = cf->args->elts;

    name.len = 0;
    state.len = 0;
    size = 0;
    ttl = 24 * 60 * 60;
    lease = 3 * 60;
    share = 25;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {

            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\": expected "
                                   "zone=name:size", &value[i]);
                return NGX_CONF_ERROR;
            }

            name.len = p - name.data;

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" is too small: at least "
                                   "%uzk", &value[i], 8 * ngx_pagesize / 1024);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            ttl = ngx_parse_time(&s, 1);

            if (ttl == NGX_ERROR || ttl < 1 || ttl > 366 * 24 * 60 * 60) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid ttl \"%V\": from 1s to 366d",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "lease=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            lease = ngx_parse_time(&s, 1);

            if (lease == NGX_ERROR || lease < 1 || lease > 24 * 60 * 60) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid lease \"%V\": from 1s to 1d",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "org_share=", 10) == 0) {
            share = NGX_ERROR;

            if (value[i].len > 11 && value[i].data[value[i].len - 1] == '%') {
                share = ngx_atoi(value[i].data + 10, value[i].len - 11);
            }

            if (share == NGX_ERROR || share < 1 || share > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid org_share \"%V\": a percentage "
                                   "of the zone from 1%% to 100%% is "
                                   "expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "state=", 6) == 0
            && value[i].len > 6)
        {
            state.data = value[i].data + 6;
            state.len = value[i].len - 6;

            if (ngx_conf_full_name(cf->cycle, &state, 0) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone=name:size\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_influencers_zone_check_reload(cf, &name, size)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_influencers_zone_add(cf, &name, size);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->journal = &ngx_http_influencers_state_journal;
    zone->ttl = (ngx_msec_t) ttl * 1000;
    zone->lease = (ngx_msec_t) lease * 1000;
    zone->org_share = share;
    zone->state_file = state;

    if (state.len && ngx_http_influencers_state_conf(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "zone=name": size 0, the zone may be declared later, like limit_req's */

ngx_shm_zone_t *
ngx_http_influencers_store_ref(ngx_conf_t *cf, ngx_str_t *value)
{
    ngx_str_t  name;

    if (ngx_strncmp(value->data, "zone=", 5) != 0 || value->len == 5) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\": expected zone=name",
                           value);
        return NULL;
    }

    name.data = value->data + 5;
    name.len = value->len - 5;

    return ngx_shared_memory_add(cf, &name, 0, &ngx_http_influencers_module);
}


/* influencers_redis zone=name address [parameters]: fleet mode */

char *
ngx_http_influencers_store_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                    *value;
    ngx_shm_zone_t               *shm_zone;
    ngx_http_influencers_zone_t  *zone;

    value = cf->args->elts;

    shm_zone = ngx_http_influencers_store_ref(cf, &value[1]);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone = shm_zone->data;

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" names a zone that is not declared yet: "
                           "\"influencers_zone %V:size\" must come first",
                           &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    if (zone->redis) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" already has an \"%V\"",
                           &zone->name, &cmd->name);
        return NGX_CONF_ERROR;
    }

    return ngx_http_influencers_redis_conf_parse(cf, zone);
}


/*
 * Each worker's journal and Redis connection: one walk over the zones.
 * Redis's links are made after the journal's files are open, and closed
 * before them.
 */

ngx_int_t
ngx_http_influencers_store_init_process(ngx_cycle_t *cycle)
{
    ngx_http_influencers_zone_t  *zone;

    for (zone = ngx_http_influencers_zone_next(cycle, NULL);
         zone;
         zone = ngx_http_influencers_zone_next(cycle, zone))
    {
        if (ngx_http_influencers_state_init_process(zone, cycle) != NGX_OK) {
            return NGX_ERROR;
        }

        if (zone->redis
            && ngx_http_influencers_redis_init_process(cycle, zone) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


void
ngx_http_influencers_store_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_influencers_zone_t  *zone;

    for (zone = ngx_http_influencers_zone_next(cycle, NULL);
         zone;
         zone = ngx_http_influencers_zone_next(cycle, zone))
    {
        if (zone->redis) {
            ngx_http_influencers_redis_exit_process(zone);
        }

        ngx_http_influencers_state_exit_process(zone);
    }
}


/* the snapshot of each zone that has a state file, as the master exits */

void
ngx_http_influencers_store_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_influencers_zone_t  *zone;

    for (zone = ngx_http_influencers_zone_next(cycle, NULL);
         zone;
         zone = ngx_http_influencers_zone_next(cycle, zone))
    {
        if (zone->sh && zone->state) {
            (void) ngx_http_influencers_state_save(zone, cycle->log);
        }
    }
}


uint64_t
ngx_http_influencers_store_org_hash(u_char *org, size_t len)
{
    return ngx_http_influencers_zone_org_hash(org, len);
}


uint64_t
ngx_http_influencers_store_body_hash(ngx_http_influencers_zone_t *zone,
    u_char *prefix, size_t plen, u_char *body, size_t len)
{
    return ngx_http_influencers_zone_body_hash(zone, prefix, plen, body, len);
}


/*
 * A retry of the same bytes, replayed unparsed: the zone alone answers,
 * in fleet mode too, since what it holds as accepted was accepted.
 */

ngx_http_influencers_store_e
ngx_http_influencers_store_replay(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log)
{
    return ngx_http_influencers_zone_replay(zone, claim->key, claim->body,
                                            ticket, log);
}


ngx_http_influencers_zone_t *
ngx_http_influencers_store_next(ngx_cycle_t *cycle,
    ngx_http_influencers_zone_t *prev)
{
    return ngx_http_influencers_zone_next(cycle, prev);
}


/* NGX_DECLINED: a zone named but never made */

ngx_int_t
ngx_http_influencers_store_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st)
{
    return ngx_http_influencers_zone_stats(zone, st);
}
