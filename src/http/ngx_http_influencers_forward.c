
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_forward.h"
#include "ngx_http_influencers_answers.h"
#include "ngx_http_influencers_metrics.h"
#include "ngx_http_influencers_json.h"


static ngx_str_t *ngx_http_influencers_forward_job_json(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx);
static ngx_int_t ngx_http_influencers_forward_headers(ngx_http_request_t *sr,
    ngx_http_influencers_ctx_t *ctx);
static ngx_table_elt_t *ngx_http_influencers_forward_push_in(
    ngx_http_request_t *sr, ngx_uint_t name, u_char *value, size_t len);
static ngx_int_t ngx_http_influencers_forward_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_uint_t ngx_http_influencers_forward_sent(ngx_http_request_t *sr);
static ngx_int_t ngx_http_influencers_forward_drop_output(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;

static ngx_str_t  ngx_http_influencers_post = ngx_string("POST");


/*
 * The forward's headers, with their lower-case names and hashes made
 * once (ngx_http_influencers_forward_init()), not for every job
 */

typedef struct {
    ngx_str_t                   name;
    u_char                     *lowcase;
    ngx_uint_t                  hash;
} ngx_http_influencers_header_t;


#define NGX_HTTP_INFLUENCERS_CONTENT_TYPE     0
#define NGX_HTTP_INFLUENCERS_X_REQUEST_ID     1
#define NGX_HTTP_INFLUENCERS_IDEMPOTENCY_KEY  2

static ngx_http_influencers_header_t
    ngx_http_influencers_forward_header_names[] = {
    { ngx_string("Content-Type"), (u_char *) "content-type", 0 },
    { ngx_string("X-Request-Id"), (u_char *) "x-request-id", 0 },
    { ngx_string("Idempotency-Key"), (u_char *) "idempotency-key", 0 }
};


ngx_int_t
ngx_http_influencers_forward(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_str_t *backend)
{
    ngx_str_t                    *json;
    ngx_buf_t                    *b;
    ngx_chain_t                  *cl;
    ngx_http_request_t           *sr;
    ngx_http_request_body_t      *rb;
    ngx_http_post_subrequest_t   *ps;

    json = ngx_http_influencers_forward_job_json(r, ctx);
    if (json == NULL) {
        return NGX_ERROR;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (ps == NULL || rb == NULL || b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_influencers_forward_done;
    ps->data = ctx;

    if (ngx_http_subrequest(r, backend, NULL, &sr, ps, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers forward: subrequest \"%V\", %uz bytes",
                   backend, json->len);

    ngx_http_set_ctx(sr, ctx, ngx_http_influencers_module);
    ctx->sr = sr;

    /* a POST: nginx never retries a sent POST on another upstream server */

    sr->method = NGX_HTTP_POST;
    sr->method_name = ngx_http_influencers_post;

    b->pos = json->data;
    b->last = json->data + json->len;
    b->temporary = 1;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;

    rb->bufs = cl;
    rb->buf = b;
    sr->request_body = rb;

    return ngx_http_influencers_forward_headers(sr, ctx);
}


/*
 * The subrequest starts with a shallow copy of the partner's headers:
 * Authorization, the partner's Idempotency-Key and everything else would
 * go out with the job.  It gets a list of its own with only ours.
 */

static ngx_int_t
ngx_http_influencers_forward_headers(ngx_http_request_t *sr,
    ngx_http_influencers_ctx_t *ctx)
{
    ngx_table_elt_t           *ct;
    ngx_http_headers_in_t     *hi;

    hi = &sr->headers_in;

    ngx_memzero(hi, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&hi->headers, sr->pool, 4, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    hi->server = sr->parent->headers_in.server;
    hi->content_length_n = ctx->sr->request_body->buf->last
                           - ctx->sr->request_body->buf->pos;
    hi->keep_alive_n = -1;

    ct = ngx_http_influencers_forward_push_in(sr,
             NGX_HTTP_INFLUENCERS_CONTENT_TYPE,
             (u_char *) "application/json", sizeof("application/json") - 1);

    if (ct == NULL
        || ngx_http_influencers_forward_push_in(sr,
               NGX_HTTP_INFLUENCERS_X_REQUEST_ID, ctx->job_request_id,
               NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN)
           == NULL
        || ngx_http_influencers_forward_push_in(sr,
               NGX_HTTP_INFLUENCERS_IDEMPOTENCY_KEY, ctx->job_id,
               NGX_HTTP_INFLUENCERS_JOB_ID_LEN)
           == NULL)
    {
        return NGX_ERROR;
    }

    hi->content_type = ct;

    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_influencers_forward_push_in(ngx_http_request_t *sr, ngx_uint_t name,
    u_char *value, size_t len)
{
    ngx_table_elt_t                *h;
    ngx_http_influencers_header_t  *n;

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NULL;
    }

    n = &ngx_http_influencers_forward_header_names[name];

    /* nothing writes to a request header's names once it is parsed */

    h->key = n->name;
    h->lowcase_key = n->lowcase;
    h->hash = n->hash;
    h->value.len = len;
    h->value.data = value;

#if (nginx_version >= 1023000)
    /* a line is also a list of the lines of its name ($content_type) */
    h->next = NULL;
#endif

    return h;
}


static ngx_str_t *
ngx_http_influencers_forward_job_json(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx)
{
    size_t                              len;
    u_char                             *p;
    ngx_str_t                          *json;
    ngx_http_influencers_job_t         *job;
    const ngx_http_influencers_enum_t  *gender, *age;

    job = &ctx->job;

    len = NGX_HTTP_INFLUENCERS_JSON_LIT_LEN(
              "{\"jobId\":\"\",\"kind\":\"influencer_create\","
              "\"influencerId\":\"\",\"projectId\":\"\","
              "\"orgId\":\"\",\"requestId\":\"\",\"createdAt\":\"\","
              "\"params\":{\"gender\":\"\",\"ageRange\":\"\","
              "\"prompt\":}}")
          + NGX_HTTP_INFLUENCERS_JOB_ID_LEN + NGX_HTTP_INFLUENCERS_INF_ID_LEN
          + NGX_HTTP_INFLUENCERS_UUID_LEN
          + job->org.len + NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN
          + sizeof("2026-11-28T09:56:07.123Z") + sizeof("non_binary")
          + sizeof("young_adult");

    if (job->has_prompt) {
        len += ngx_http_influencers_json_str_len(job->prompt,
                                                 job->prompt_len);
    }

    json = ngx_palloc(r->pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, len);
    if (json == NULL || p == NULL) {
        return NULL;
    }

    json->data = p;

    gender = &ngx_http_influencers_genders[job->gender];
    age = &ngx_http_influencers_age_ranges[job->age_range];

    /* orgs are checked to need no escaping when they are read */

    p = ngx_http_influencers_json_lit(p, "{\"jobId\":\"");
    p = ngx_http_influencers_json_raw(p, ctx->job_id,
                                      NGX_HTTP_INFLUENCERS_JOB_ID_LEN);
    p = ngx_http_influencers_json_lit(p, "\",\"kind\":\"influencer_create\","
                                         "\"influencerId\":\"");
    p = ngx_http_influencers_json_raw(p, ctx->influencer_id,
                                      NGX_HTTP_INFLUENCERS_INF_ID_LEN);
    p = ngx_http_influencers_json_lit(p, "\",\"projectId\":\"");
    p = ngx_http_influencers_json_raw(p, ctx->project_id,
                                      NGX_HTTP_INFLUENCERS_UUID_LEN);
    p = ngx_http_influencers_json_lit(p, "\",\"orgId\":\"");
    p = ngx_http_influencers_json_raw(p, job->org.data, job->org.len);
    p = ngx_http_influencers_json_lit(p, "\",\"requestId\":\"");
    p = ngx_http_influencers_json_raw(p, ctx->job_request_id,
                                      NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN);
    p = ngx_http_influencers_json_lit(p, "\",\"createdAt\":\"");
    p = ngx_http_influencers_ids_iso_time(p,
        ngx_http_influencers_ids_ulid_time(ctx->ticket.job_id));
    p = ngx_http_influencers_json_lit(p, "\",\"params\":{\"gender\":\"");
    p = ngx_http_influencers_json_raw(p, gender->name, gender->len);
    p = ngx_http_influencers_json_lit(p, "\",\"ageRange\":\"");
    p = ngx_http_influencers_json_raw(p, age->name, age->len);
    *p++ = '"';

    if (job->has_prompt) {
        p = ngx_http_influencers_json_lit(p, ",\"prompt\":");
        p = ngx_http_influencers_json_str(p, job->prompt, job->prompt_len);
    }

    *p++ = '}';
    *p++ = '}';

    json->len = p - json->data;

    return json;
}


/*
 * Called each time the subrequest is finalized, also when the partner's
 * request is about to be terminated (an HTTP/2 stream reset): it records
 * the outcome, which the store gets either way.  The parent is not active
 * yet and is resumed by nginx.
 *
 * For the store, what counts is whether the job may have reached the
 * backend: a forward that failed before a byte was sent, or that the
 * backend answered with a status, failed for sure; one cut short after
 * the job was sent (nginx's own timeout, a connection lost, a reply
 * broken after its header) may have landed.
 */

static ngx_int_t
ngx_http_influencers_forward_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_influencers_ctx_t  *ctx = data;

    ngx_int_t                       ms;
    ngx_uint_t                      status, sent;
    ngx_time_t                     *tp;
    ngx_http_influencers_forward_e  outcome;

    if (ctx->done) {
        return NGX_OK;
    }

    if (rc == NGX_AGAIN) {
        /* not finished yet */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                       "influencers forward: not finished yet");
        return rc;
    }

    ctx->done = 1;
    status = sr->headers_out.status;
    sent = ngx_http_influencers_forward_sent(sr);

    if (rc == NGX_ERROR
        && !(status >= NGX_HTTP_OK && status < NGX_HTTP_SPECIAL_RESPONSE))
    {
        /* the upstream failed after a header, or before any */
        outcome = (status == 0 && sent) ? NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN
                                        : NGX_HTTP_INFLUENCERS_FORWARD_FAILED;

    } else if (rc == NGX_ERROR) {
        /* a 2xx header, then the reply broke: not a whole answer */
        outcome = NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN;

    } else if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
        /* nginx's own answer */
        outcome = sent ? NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT
                       : NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT;

    } else if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        /* nginx's own answer (499: cut with the partner's connection) */
        outcome = sent ? NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN
                       : NGX_HTTP_INFLUENCERS_FORWARD_FAILED;

    } else if (status >= NGX_HTTP_OK && status < NGX_HTTP_SPECIAL_RESPONSE) {
        outcome = NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED;

    } else if (status == NGX_HTTP_NOT_FOUND) {
        outcome = NGX_HTTP_INFLUENCERS_FORWARD_NOT_FOUND;

    } else {
        outcome = NGX_HTTP_INFLUENCERS_FORWARD_FAILED;

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "influencers: the backend answered %ui to job "
                      "forward \"%V\"", status, &sr->uri);
    }

    ctx->forward = outcome;

    /* as $request_time is: the subrequest's start, the cached time now */

    tp = ngx_timeofday();
    ms = (ngx_int_t) ((tp->sec - sr->start_sec) * 1000
                      + (tp->msec - sr->start_msec));
    ms = ngx_max(ms, 0);

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "influencers forward: done, rc %i, status %ui: %s%s%s, "
                   "%i ms", rc, status,
                   ngx_http_influencers_answers_name(
                       ngx_http_influencers_forward_answer(outcome)),
                   sent ? ", sent" : ", nothing sent",
                   ngx_http_influencers_forward_in_doubt(outcome)
                   ? " (outcome unknown)" : "", ms);

    ngx_http_influencers_metrics_forward(sr, outcome, (ngx_msec_t) ms);

    /* NGX_OK: nginx neither renders an error page for the subrequest nor
     * terminates the parent */

    return NGX_OK;
}


/*
 * Whether any byte of the job may have gone to an upstream server: the
 * peer being talked to, or one tried before (proxy_next_upstream), whose
 * bytes nginx keeps in its states.  A location that answers itself sent
 * nothing anywhere.
 */

static ngx_uint_t
ngx_http_influencers_forward_sent(ngx_http_request_t *sr)
{
    ngx_uint_t                  i;
    ngx_http_upstream_state_t  *state;

    if (sr->upstream == NULL) {
        return 0;
    }

    if (sr->upstream->request_sent) {
        return 1;
    }

    if (sr->upstream_states == NULL) {
        return 0;
    }

    state = sr->upstream_states->elts;

    for (i = 0; i < sr->upstream_states->nelts; i++) {
        if (state[i].bytes_sent) {
            return 1;
        }
    }

    return 0;
}


ngx_uint_t
ngx_http_influencers_forward_answer(ngx_http_influencers_forward_e outcome)
{
    switch (outcome) {

    case NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED:
        return NGX_HTTP_INFLUENCERS_ACCEPTED;

    case NGX_HTTP_INFLUENCERS_FORWARD_NOT_FOUND:
        return NGX_HTTP_INFLUENCERS_NOT_FOUND;

    case NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT:
    case NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT:
        return NGX_HTTP_INFLUENCERS_UPSTREAM_TIMEOUT;

    case NGX_HTTP_INFLUENCERS_FORWARD_NOT_STARTED:
        return NGX_HTTP_INFLUENCERS_INTERNAL;

    default: /* FAILED, UNKNOWN */
        return NGX_HTTP_INFLUENCERS_UPSTREAM_ERROR;
    }
}


const char *
ngx_http_influencers_forward_verdict(ngx_http_influencers_forward_e outcome)
{
    if (outcome == NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED) {
        return "accepted";
    }

    return ngx_http_influencers_forward_in_doubt(outcome) ? "unknown"
                                                          : "failed";
}


ngx_int_t
ngx_http_influencers_forward_init(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_influencers_header_t  *n;

    for (i = 0; i < sizeof(ngx_http_influencers_forward_header_names)
                    / sizeof(ngx_http_influencers_header_t); i++)
    {
        n = &ngx_http_influencers_forward_header_names[i];
        n->hash = ngx_hash_key(n->lowcase, n->name.len);
    }

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_influencers_forward_drop_output;

    return NGX_OK;
}


/*
 * The backend's reply body is of no use to the partner: drop it as it
 * comes, so that a reply of any size neither reaches the client nor
 * overflows an in-memory buffer, and the upstream connection is kept.
 */

static ngx_int_t
ngx_http_influencers_forward_drop_output(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                 *cl;
    ngx_http_influencers_ctx_t  *ctx;

    if (r == r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL || ctx->sr != r) {
        return ngx_http_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return NGX_OK;
}
