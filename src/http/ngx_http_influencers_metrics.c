
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_store.h"
#include "ngx_http_influencers_answers.h"
#include "ngx_http_influencers_metrics.h"


/*
 * The zones' own counters live in each zone, under its lock.  What no
 * zone sees is counted here: every answer (those of the influencers_errors
 * location too, which has no zone) and every forward, in one small shared
 * zone of the module's, by atomic additions: no lock on a request's path.
 */

#define NGX_HTTP_INFLUENCERS_METRICS_MAGIC    0x4d464e49    /* "INFM" */
#define NGX_HTTP_INFLUENCERS_METRICS_VERSION  1

/* room for the answers enum: checked against reply.c's table */
#define NGX_HTTP_INFLUENCERS_METRICS_ANSWERS  32

/* the forward's histogram, in milliseconds, and the same as "le" labels */
#define NGX_HTTP_INFLUENCERS_METRICS_BUCKETS  13


struct ngx_http_influencers_metrics_sh_s {
    uint32_t       magic;
    uint32_t       version;
    ngx_atomic_t   answers[NGX_HTTP_INFLUENCERS_METRICS_ANSWERS];
    ngx_atomic_t   forwards[NGX_HTTP_INFLUENCERS_FORWARD_OUTCOMES];

    /* each bucket alone, the last one +Inf: summed when written out */
    ngx_atomic_t   buckets[NGX_HTTP_INFLUENCERS_METRICS_BUCKETS + 1];
    ngx_atomic_t   duration_ms;
};


typedef struct {
    u_char        *pos;
    u_char        *last;
} ngx_http_influencers_out_t;


static ngx_int_t ngx_http_influencers_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_influencers_metrics_answers(
    ngx_http_influencers_out_t *out, ngx_http_influencers_metrics_sh_t *sh);
static void ngx_http_influencers_metrics_forwards(
    ngx_http_influencers_out_t *out, ngx_http_influencers_metrics_sh_t *sh);
static void ngx_http_influencers_metrics_zones(
    ngx_http_influencers_out_t *out, ngx_uint_t nzones,
    ngx_http_influencers_stats_t *st, ngx_str_t *names);
static ngx_uint_t ngx_http_influencers_metrics_same_answer(ngx_uint_t a,
    ngx_uint_t b);
static ngx_int_t ngx_http_influencers_metrics_label(ngx_pool_t *pool,
    ngx_str_t *value, ngx_str_t *label);
static void ngx_http_influencers_metrics_print(ngx_http_influencers_out_t *out,
    const char *fmt, ...);

/* its address is the zone's tag: not an influencers zone's */

static ngx_str_t  ngx_http_influencers_metrics_zone_name =
    ngx_string("influencers_metrics");


static ngx_msec_t  ngx_http_influencers_buckets[] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000
};

static char  *ngx_http_influencers_bucket_labels[] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "30", "60"
};


/* indexed by ngx_http_influencers_forward_e */

static char  *ngx_http_influencers_metrics_outcomes[] = {
    "accepted", "failed", "not_found", "timeout", "unknown"
};


void *
ngx_http_influencers_metrics_create_main_conf(ngx_conf_t *cf)
{
    /*
     * set by ngx_pcalloc():
     *
     *     mcf->shm_zone = NULL;
     *     mcf->sh = NULL;
     */

    return ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_main_conf_t));
}


/*
 * The module's counting zone, made once for a configuration that serves
 * anything of the module's.  Its size is the smallest a slab takes.
 */

ngx_int_t
ngx_http_influencers_metrics_add(ngx_conf_t *cf)
{
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_influencers_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_influencers_module);

    if (mcf->shm_zone) {
        return NGX_OK;
    }

    if (ngx_http_influencers_answers_count()
        > NGX_HTTP_INFLUENCERS_METRICS_ANSWERS)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "influencers: %ui answers do not fit in the "
                           "metrics zone's %d counters",
                           ngx_http_influencers_answers_count(),
                           NGX_HTTP_INFLUENCERS_METRICS_ANSWERS);
        return NGX_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf,
                                     &ngx_http_influencers_metrics_zone_name,
                                     8 * ngx_pagesize,
                                     &ngx_http_influencers_metrics_zone_name);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_influencers_metrics_init_zone;
    shm_zone->data = mcf;

    mcf->shm_zone = shm_zone;

    return NGX_OK;
}


/* a reload keeps the counts: Prometheus takes a reset for a restart */

static ngx_int_t
ngx_http_influencers_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_influencers_main_conf_t  *omcf = data;

    ngx_slab_pool_t                    *shpool;
    ngx_http_influencers_main_conf_t   *mcf;
    ngx_http_influencers_metrics_sh_t  *sh;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (omcf && omcf->sh
        && omcf->sh->magic == NGX_HTTP_INFLUENCERS_METRICS_MAGIC
        && omcf->sh->version == NGX_HTTP_INFLUENCERS_METRICS_VERSION)
    {
        mcf->sh = omcf->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists && shpool->data) {
        mcf->sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_influencers_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    sh->magic = NGX_HTTP_INFLUENCERS_METRICS_MAGIC;
    sh->version = NGX_HTTP_INFLUENCERS_METRICS_VERSION;

    shpool->data = sh;
    mcf->sh = sh;

    return NGX_OK;
}


/* every answer the module sends, counted as it is sent */

void
ngx_http_influencers_metrics_answer(ngx_http_request_t *r, ngx_uint_t answer)
{
    ngx_http_influencers_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_influencers_module);

    if (mcf->sh && answer < NGX_HTTP_INFLUENCERS_METRICS_ANSWERS) {
        (void) ngx_atomic_fetch_add(&mcf->sh->answers[answer], 1);
    }
}


void
ngx_http_influencers_metrics_forward(ngx_http_request_t *r,
    ngx_http_influencers_forward_e outcome, ngx_msec_t ms)
{
    ngx_uint_t                         i;
    ngx_http_influencers_metrics_sh_t  *sh;
    ngx_http_influencers_main_conf_t   *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_influencers_module);
    sh = mcf->sh;

    if (sh == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_INFLUENCERS_METRICS_BUCKETS; i++) {
        if (ms <= ngx_http_influencers_buckets[i]) {
            break;
        }
    }

    if (outcome == NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT) {
        outcome = NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT;
    }

    if (outcome >= NGX_HTTP_INFLUENCERS_FORWARD_OUTCOMES) {
        return;
    }

    (void) ngx_atomic_fetch_add(&sh->forwards[outcome], 1);
    (void) ngx_atomic_fetch_add(&sh->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&sh->duration_ms, ms);
}


/*
 * influencers_metrics: Prometheus's text format, version 0.0.4.  The
 * module's counters are read without a lock; each zone's under its own,
 * once, as influencers_stats does.  Zones are labelled by name, so the
 * label's values are the configuration's zones: never an org or a key.
 */

/*
 * influencers_metrics' body: NGX_OK, or NGX_ERROR, logged here when it is
 * more than no memory.
 */

ngx_int_t
ngx_http_influencers_metrics_prometheus(ngx_http_request_t *r,
    ngx_str_t *text)
{
    size_t                             size;
    u_char                            *body;
    ngx_str_t                         *names;
    ngx_uint_t                         n, nzones;
    ngx_cycle_t                       *cycle;
    ngx_http_influencers_out_t         out;
    ngx_http_influencers_zone_t       *zone;
    ngx_http_influencers_stats_t      *st;
    ngx_http_influencers_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_influencers_module);

    if (mcf->sh == NULL) {
        return NGX_ERROR;
    }

    cycle = (ngx_cycle_t *) ngx_cycle;
    nzones = 0;

    for (zone = ngx_http_influencers_store_next(cycle, NULL);
         zone;
         zone = ngx_http_influencers_store_next(cycle, zone))
    {
        nzones++;
    }

    st = ngx_palloc(r->pool,
                    (nzones + 1) * sizeof(ngx_http_influencers_stats_t));
    names = ngx_palloc(r->pool, (nzones + 1) * sizeof(ngx_str_t));
    if (st == NULL || names == NULL) {
        return NGX_ERROR;
    }

    /* what every line but a zone's takes, and a zone's lines per name */

    size = 24576;
    n = 0;

    for (zone = ngx_http_influencers_store_next(cycle, NULL);
         zone && n < nzones;
         zone = ngx_http_influencers_store_next(cycle, zone))
    {
        if (ngx_http_influencers_store_stats(zone, &st[n]) != NGX_OK) {
            continue;
        }

        if (ngx_http_influencers_metrics_label(r->pool, &st[n].name, &names[n])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        size += 48 * (96 + NGX_INT64_LEN + names[n].len);
        n++;
    }

    nzones = n;

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_ERROR;
    }

    out.pos = body;
    out.last = body + size;

    ngx_http_influencers_metrics_answers(&out, mcf->sh);
    ngx_http_influencers_metrics_forwards(&out, mcf->sh);
    ngx_http_influencers_metrics_zones(&out, nzones, st, names);

    if (out.pos == out.last) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "influencers: the metrics did not fit in %uz bytes",
                      size);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers metrics: %ui zones, %uz bytes",
                   nzones, (size_t) (out.pos - body));

    text->data = body;
    text->len = out.pos - body;

    return NGX_OK;
}


/* by status and error code: answers that share both are one series */

static void
ngx_http_influencers_metrics_answers(ngx_http_influencers_out_t *out,
    ngx_http_influencers_metrics_sh_t *sh)
{
    ngx_uint_t   i, j, n, answers;
    const char  *code;

    ngx_http_influencers_metrics_print(out,
        "# HELP influencers_responses_total Answers the module sent, by "
        "HTTP status and error code (\"none\" for 202), the "
        "influencers_errors location's included.\n"
        "# TYPE influencers_responses_total counter\n");

    answers = ngx_http_influencers_answers_count();

    for (i = 0; i < answers; i++) {

        for (j = 0; j < i; j++) {
            if (ngx_http_influencers_metrics_same_answer(i, j)) {
                break;
            }
        }

        if (j < i) {
            /* written with the first of its kind */
            continue;
        }

        n = 0;

        for (j = i; j < answers; j++) {
            if (ngx_http_influencers_metrics_same_answer(i, j)) {
                n += sh->answers[j];
            }
        }

        code = (i == NGX_HTTP_INFLUENCERS_ACCEPTED)
               ? NULL : ngx_http_influencers_answers_name(i);

        ngx_http_influencers_metrics_print(out,
            "influencers_responses_total{code=\"%ui\",error=\"%s\"} %ui\n",
            ngx_http_influencers_answers_status(i), code ? code : "none", n);
    }
}


static void
ngx_http_influencers_metrics_forwards(ngx_http_influencers_out_t *out,
    ngx_http_influencers_metrics_sh_t *sh)
{
    ngx_uint_t  i, n, ms;

    ngx_http_influencers_metrics_print(out,
        "# HELP influencers_forwards_total Forwards of jobs to the backend "
        "that ended, by outcome.\n"
        "# TYPE influencers_forwards_total counter\n");

    for (i = 0; i < NGX_HTTP_INFLUENCERS_FORWARD_OUTCOMES; i++) {
        ngx_http_influencers_metrics_print(out,
            "influencers_forwards_total{outcome=\"%s\"} %uA\n",
            ngx_http_influencers_metrics_outcomes[i], sh->forwards[i]);
    }

    ngx_http_influencers_metrics_print(out,
        "# HELP influencers_forward_duration_seconds How long forwards "
        "took, from the subrequest's start to its end (millisecond "
        "resolution).\n"
        "# TYPE influencers_forward_duration_seconds histogram\n");

    n = 0;

    for (i = 0; i < NGX_HTTP_INFLUENCERS_METRICS_BUCKETS; i++) {
        n += sh->buckets[i];

        ngx_http_influencers_metrics_print(out,
            "influencers_forward_duration_seconds_bucket{le=\"%s\"} %ui\n",
            ngx_http_influencers_bucket_labels[i], n);
    }

    n += sh->buckets[i];
    ms = sh->duration_ms;

    ngx_http_influencers_metrics_print(out,
        "influencers_forward_duration_seconds_bucket{le=\"+Inf\"} %ui\n"
        "influencers_forward_duration_seconds_sum %ui.%03ui\n"
        "influencers_forward_duration_seconds_count %ui\n",
        n, ms / 1000, ms % 1000, n);
}


/* one family after another, each with every zone, as the format wants */

static void
ngx_http_influencers_metrics_zones(ngx_http_influencers_out_t *out,
    ngx_uint_t nzones, ngx_http_influencers_stats_t *st, ngx_str_t *names)
{
    u_char                           *p;
    ngx_uint_t                        i, k;
    ngx_http_influencers_counters_t  *c;

    /* one number per zone each: the org gauges, the Redis counters */

    static struct {
        char        *name;
        char        *help;
        char        *type;
        size_t       offset;
        ngx_uint_t   width;     /* 0 ngx_uint_t, 1 ngx_atomic_t, 2 64 */
    }  families[] = {
        { "influencers_zone_orgs", "Orgs holding records in the zone.",
          "gauge", offsetof(ngx_http_influencers_stats_t, orgs), 0 },
        { "influencers_zone_largest_org_records",
          "The records the largest org holds.",
          "gauge", offsetof(ngx_http_influencers_stats_t, largest_org), 0 },
        { "influencers_zone_org_limit_records",
          "The most records one org may hold (org_share).",
          "gauge", offsetof(ngx_http_influencers_stats_t, org_limit), 0 },
        { "influencers_redis_operations_total",
          "Round trips to Redis (fleet mode).", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_ops), 1 },
        { "influencers_redis_failures_total",
          "Round trips to Redis that failed or timed out.", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_failures), 1 },
        { "influencers_redis_fallbacks_total",
          "Requests served by the zone alone while Redis could not be "
          "reached (on_error=local).", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_fallbacks),
          1 },
        { "influencers_redis_stale_finishes_total",
          "Acceptances Redis refused because another job held the key "
          "(Redis lost it).", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_stale), 1 },
        { "influencers_redis_owed_finishes",
          "Finishes kept in the zone until Redis takes them.", "gauge",
          offsetof(ngx_http_influencers_stats_t, owing), 0 },
        { "influencers_redis_owed_finishes_sent_again_total",
          "Owed finishes sent again by a worker's timer.", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.resent), 2 },
        { "influencers_redis_owed_finishes_abandoned_total",
          "Owed finishes given up, their entries expired unsent.", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.abandoned), 2 },
        { "influencers_redis_owed_finishes_unkept_total",
          "Finishes the zone had no room to keep (sent once).", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.unkept), 2 },
        { "influencers_redis_unsafe",
          "1 when Redis can lose what it acknowledged (no AOF, or a "
          "maxmemory-policy that evicts).", "gauge",
          offsetof(ngx_http_influencers_stats_t, redis_unsafe), 0 },
        { "influencers_redis_restarts_total",
          "Redis seen back as another process (a new run_id).", "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_restarts), 2 },
        { "influencers_redis_data_lost_total",
          "Redis restarts without persistence: every entry it held lost.",
          "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_lost), 2 },
        { "influencers_redis_bad_values_total",
          "Values in Redis the module did not write, never replayed.",
          "counter",
          offsetof(ngx_http_influencers_stats_t, counters.redis_bad), 2 }
    };

    static struct {
        char    *name;
        size_t   offset;
    }  idem[] = {
        { "replay", offsetof(ngx_http_influencers_counters_t, replays) },
        { "conflict", offsetof(ngx_http_influencers_counters_t, conflicts) },
        { "mismatch", offsetof(ngx_http_influencers_counters_t, mismatches) },
        { "release", offsetof(ngx_http_influencers_counters_t, releases) },
        { "lease_expiry",
          offsetof(ngx_http_influencers_counters_t, lease_expiries) },
        { "capacity_rejection",
          offsetof(ngx_http_influencers_counters_t, capacity) },
        { "share_rejection", offsetof(ngx_http_influencers_counters_t, share) },
        { "resend", offsetof(ngx_http_influencers_counters_t, resends) },
        { "unknown_outcome",
          offsetof(ngx_http_influencers_counters_t, unknown) },
        { "kept_in_doubt", offsetof(ngx_http_influencers_counters_t, kept) }
    };

    ngx_http_influencers_metrics_print(out,
        "# HELP influencers_idempotency_total Decisions of the zone's "
        "idempotency store: claim (a new job, with or without a key; "
        "in fleet mode those Redis then refused too), "
        "replay, conflict (409), mismatch (422), release (a failed "
        "forward's key), lease_expiry, capacity_rejection (503, zone "
        "full), share_rejection (503, an org at its share), resend (a "
        "key's job in doubt sent again), unknown_outcome (a forward that "
        "may have landed), kept_in_doubt (a failure that kept the key's "
        "job).\n"
        "# TYPE influencers_idempotency_total counter\n");

    for (i = 0; i < nzones; i++) {
        c = &st[i].counters;

        /*
         * The JSON's claims are those that stood: in fleet mode a claim
         * that Redis refused is taken back.  A counter never goes down,
         * so every claim the zone took is counted here.
         */

        ngx_http_influencers_metrics_print(out,
            "influencers_idempotency_total{zone=\"%V\",outcome=\"claim\"} "
            "%uL\n", &names[i], c->claims + c->unclaimed);

        for (k = 0; k < sizeof(idem) / sizeof(idem[0]); k++) {
            ngx_http_influencers_metrics_print(out,
                "influencers_idempotency_total{zone=\"%V\",outcome=\"%s\"} "
                "%uL\n", &names[i], idem[k].name,
                *(uint64_t *) ((u_char *) c + idem[k].offset));
        }
    }

    ngx_http_influencers_metrics_print(out,
        "# HELP influencers_zone_records The zone's records by state: "
        "free, inflight (being forwarded), keyed (unexpired idempotency "
        "entries), evictable (jobs without a key, failed or lost jobs, "
        "cached entries).\n"
        "# TYPE influencers_zone_records gauge\n");

    for (i = 0; i < nzones; i++) {
        ngx_http_influencers_metrics_print(out,
            "influencers_zone_records{zone=\"%V\",state=\"free\"} %ui\n"
            "influencers_zone_records{zone=\"%V\",state=\"inflight\"} %ui\n"
            "influencers_zone_records{zone=\"%V\",state=\"keyed\"} %ui\n"
            "influencers_zone_records{zone=\"%V\",state=\"evictable\"} %ui\n",
            &names[i], st[i].free, &names[i], st[i].inflight,
            &names[i], st[i].keyed, &names[i],
            st[i].records - st[i].free - st[i].inflight - st[i].keyed);
    }

    for (k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
        ngx_http_influencers_metrics_print(out, "# HELP %s %s\n# TYPE %s %s\n",
                                           families[k].name, families[k].help,
                                           families[k].name, families[k].type);

        for (i = 0; i < nzones; i++) {
            p = (u_char *) &st[i] + families[k].offset;

            if (families[k].width == 2) {
                ngx_http_influencers_metrics_print(out, "%s{zone=\"%V\"} %uL\n",
                                                   families[k].name, &names[i],
                                                   *(uint64_t *) p);
                continue;
            }

            ngx_http_influencers_metrics_print(out, "%s{zone=\"%V\"} %uA\n",
                families[k].name, &names[i],
                families[k].width ? (ngx_atomic_uint_t) *(ngx_atomic_t *) p
                                  : (ngx_atomic_uint_t) *(ngx_uint_t *) p);
        }
    }
}


/* a label value: backslash, double quote and line feed escaped */

static ngx_int_t
ngx_http_influencers_metrics_label(ngx_pool_t *pool, ngx_str_t *value,
    ngx_str_t *label)
{
    u_char  *p, *s, *end;

    p = ngx_pnalloc(pool, 2 * value->len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    label->data = p;
    end = value->data + value->len;

    for (s = value->data; s < end; s++) {
        switch (*s) {
        case '\\':
        case '"':
            *p++ = '\\';
            *p++ = *s;
            break;
        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;
        default:
            *p++ = *s;
        }
    }

    label->len = p - label->data;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_influencers_metrics_same_answer(ngx_uint_t a, ngx_uint_t b)
{
    const char  *x, *y;

    if (ngx_http_influencers_answers_status(a)
        != ngx_http_influencers_answers_status(b))
    {
        return 0;
    }

    x = ngx_http_influencers_answers_name(a);
    y = ngx_http_influencers_answers_name(b);

    return ngx_strcmp(x, y) == 0;
}


/* writes until the buffer is full: a full one is then an error */

static void
ngx_http_influencers_metrics_print(ngx_http_influencers_out_t *out,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    out->pos = ngx_vslprintf(out->pos, out->last, fmt, args);
    va_end(args);
}


/* the zone's counters as JSON, summed over every worker by construction */

ngx_int_t
ngx_http_influencers_metrics_stats(ngx_http_request_t *r,
    ngx_http_influencers_zone_t *zone, ngx_str_t *json)
{
    ngx_str_t                      body;
    ngx_http_influencers_stats_t   st;

    if (ngx_http_influencers_store_stats(zone, &st) != NGX_OK) {
        return NGX_ERROR;
    }

    body.data = ngx_pnalloc(r->pool, 2048);
    if (body.data == NULL) {
        return NGX_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                   "{\"records\":%ui,\"entries\":%ui,\"keyed\":%ui,"
                   "\"inflight\":%ui,\"bytesInUse\":%uz,\"recordSize\":%uz,"
                   "\"claims\":%uL,\"replays\":%uL,\"conflicts\":%uL,"
                   "\"mismatches\":%uL,\"releases\":%uL,"
                   "\"leaseExpiries\":%uL,\"capacityRejections\":%uL,"
                   "\"accepted\":%uL,\"failed\":%uL,"
                   "\"orgs\":%ui,\"largestOrg\":%ui,\"orgLimit\":%ui,"
                   "\"shareRejections\":%uL,\"redisOps\":%uA,"
                   "\"redisFailures\":%uA,\"redisFallbacks\":%uA,"
                   "\"redisStale\":%uA,\"resends\":%uL,"
                   "\"unknownOutcomes\":%uL,\"keptInDoubt\":%uL,"
                   "\"redisOwed\":%ui,\"redisOwedMax\":%ui,"
                   "\"redisOwedKept\":%uL,\"redisOwedResent\":%uL,"
                   "\"redisOwedAbandoned\":%uL,\"redisOwedUnkept\":%uL,"
                   "\"redisUnsafe\":%ui,\"redisRestarts\":%uL,"
                   "\"redisDataLost\":%uL,\"redisBadValues\":%uL}",
                   st.records, st.records - st.free, st.keyed, st.inflight,
                   (st.records - st.free) * st.record_size, st.record_size,
                   st.counters.claims, st.counters.replays,
                   st.counters.conflicts, st.counters.mismatches,
                   st.counters.releases, st.counters.lease_expiries,
                   st.counters.capacity, st.counters.accepted,
                   st.counters.failed, st.orgs, st.largest_org, st.org_limit,
                   st.counters.share, st.counters.redis_ops,
                   st.counters.redis_failures, st.counters.redis_fallbacks,
                   st.counters.redis_stale, st.counters.resends,
                   st.counters.unknown, st.counters.kept, st.owing,
                   st.owing_max, st.counters.owed, st.counters.resent,
                   st.counters.abandoned, st.counters.unkept,
                   st.redis_unsafe, st.counters.redis_restarts,
                   st.counters.redis_lost, st.counters.redis_bad)
               - body.data;

    *json = body;

    return NGX_OK;
}
