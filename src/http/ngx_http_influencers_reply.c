
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_answers.h"
#include "ngx_http_influencers_reply.h"
#include "ngx_http_influencers_metrics.h"
#include "ngx_http_influencers_json.h"


/* the 202 envelope, in pieces around its ids */

#define NGX_HTTP_INFLUENCERS_JOB     "{\"jobId\":\""
#define NGX_HTTP_INFLUENCERS_INF                                              \
    "\",\"kind\":\"influencer_create\",\"status\":\"running\","              \
    "\"influencerId\":\""
#define NGX_HTTP_INFLUENCERS_LOC     "\",\"locationUrl\":\""
#define NGX_HTTP_INFLUENCERS_JOBS    "/v1/jobs/"

#define NGX_HTTP_INFLUENCERS_ENVELOPE_LEN                                     \
    (sizeof(NGX_HTTP_INFLUENCERS_JOB NGX_HTTP_INFLUENCERS_INF                 \
            NGX_HTTP_INFLUENCERS_LOC NGX_HTTP_INFLUENCERS_JOBS "\"}") - 1      \
     + 2 * NGX_HTTP_INFLUENCERS_JOB_ID_LEN + NGX_HTTP_INFLUENCERS_INF_ID_LEN)

static ngx_str_t  ngx_http_influencers_reply_json_type =
    ngx_string("application/json");


static ngx_int_t ngx_http_influencers_reply_push(ngx_http_request_t *r,
    char *name, size_t name_len, u_char *value, size_t len);
static ngx_int_t ngx_http_influencers_reply_send_answer(ngx_http_request_t *r,
    u_char *request_id, ngx_uint_t answer, ngx_str_t *details,
    time_t retry_after);
static ngx_int_t ngx_http_influencers_reply_push_seconds(ngx_http_request_t *r,
    char *name, size_t name_len, time_t t);
static ngx_int_t ngx_http_influencers_reply_push_http_date(
    ngx_http_request_t *r, char *name, size_t name_len, time_t t);
static void ngx_http_influencers_reply_count(ngx_http_request_t *r,
    ngx_uint_t answer);
static ngx_int_t ngx_http_influencers_reply_send(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);


#define ngx_http_influencers_push_str(r, name, value, len)                   \
    ngx_http_influencers_reply_push(r, name, sizeof(name) - 1, value, len)


ngx_int_t
ngx_http_influencers_reply_send_error(ngx_http_request_t *r, u_char *request_id,
    ngx_uint_t answer, ngx_str_t *details)
{
    return ngx_http_influencers_reply_send_answer(r, request_id, answer,
                                                  details,
                                            0);
}


ngx_int_t
ngx_http_influencers_reply_send_busy(ngx_http_request_t *r, u_char *request_id,
    ngx_uint_t answer, time_t retry_after)
{
    return ngx_http_influencers_reply_send_answer(r, request_id, answer, NULL,
                                                  retry_after);
}


static ngx_int_t
ngx_http_influencers_reply_send_answer(ngx_http_request_t *r,
                                       u_char *request_id,
    ngx_uint_t answer, ngx_str_t *details, time_t retry_after)
{
    size_t                           len;
    u_char                          *body, *p;
    const ngx_http_influencers_answer_t  *e;

    e = ngx_http_influencers_answers_get(answer);

    if (ngx_http_influencers_push_str(r, "X-Request-Id", request_id,
                                      NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    switch (e->status) {

    case NGX_HTTP_UNAUTHORIZED:
        if (ngx_http_influencers_push_str(r, "WWW-Authenticate",
                                          (u_char *) "Bearer", 6)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        break;

    case NGX_HTTP_NOT_ALLOWED:
        if (ngx_http_influencers_push_str(r, "Allow", (u_char *) "POST", 4)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        break;

    case NGX_HTTP_CONFLICT:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        if (ngx_http_influencers_reply_push_seconds(r, "Retry-After",
                                                    sizeof("Retry-After") - 1,
                                                    retry_after)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        break;
    }

    /* codes and messages are constants that need no escaping */

    len = NGX_HTTP_INFLUENCERS_JSON_LIT_LEN(
              "{\"error\":{\"code\":\"\",\"message\":\"\",\"requestId\":\"\"}}")
          + e->code.len + e->message.len + NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN;

    if (details) {
        len += NGX_HTTP_INFLUENCERS_JSON_LIT_LEN(",\"details\":")
               + details->len;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_ERROR;
    }

    p = ngx_http_influencers_json_lit(body, "{\"error\":{\"code\":\"");
    p = ngx_http_influencers_json_raw(p, e->code.data, e->code.len);
    p = ngx_http_influencers_json_lit(p, "\",\"message\":\"");
    p = ngx_http_influencers_json_raw(p, e->message.data, e->message.len);
    p = ngx_http_influencers_json_lit(p, "\",\"requestId\":\"");
    p = ngx_http_influencers_json_raw(p, request_id,
                                      NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN);
    *p++ = '"';

    if (details) {
        /* already JSON */
        p = ngx_http_influencers_json_lit(p, ",\"details\":");
        p = ngx_http_influencers_json_raw(p, details->data, details->len);
    }

    *p++ = '}';
    *p++ = '}';

    if (e->status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
        || e->status == NGX_HTTP_BAD_REQUEST)
    {
        /* the rest of the body, if any, would be read as the next request */
        r->keepalive = 0;
        r->lingering_close = 1;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers answer: %ui %V%s", e->status, &e->code,
                   details ? ", with details" : "");

    ngx_http_influencers_reply_count(r, answer);

    return ngx_http_influencers_reply_send(r, e->status, body, p - body);
}


ngx_int_t
ngx_http_influencers_reply_send_accepted(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_replayed_e replayed)
{
    u_char                               *body, *p, *location;
    ngx_http_influencers_store_ticket_t  *ticket;

    ticket = &ctx->ticket;

    /* the envelope, in the reference page's key order */

    body = ngx_pnalloc(r->pool, NGX_HTTP_INFLUENCERS_ENVELOPE_LEN);
    if (body == NULL) {
        return NGX_ERROR;
    }

    p = ngx_http_influencers_json_lit(body, NGX_HTTP_INFLUENCERS_JOB);
    p = ngx_http_influencers_json_raw(p, ctx->job_id,
                                      NGX_HTTP_INFLUENCERS_JOB_ID_LEN);
    p = ngx_http_influencers_json_lit(p, NGX_HTTP_INFLUENCERS_INF);
    p = ngx_http_influencers_json_raw(p, ctx->influencer_id,
                                      NGX_HTTP_INFLUENCERS_INF_ID_LEN);
    p = ngx_http_influencers_json_lit(p, NGX_HTTP_INFLUENCERS_LOC);

    location = p;
    p = ngx_http_influencers_json_lit(p, NGX_HTTP_INFLUENCERS_JOBS);
    p = ngx_http_influencers_json_raw(p, ctx->job_id,
                                      NGX_HTTP_INFLUENCERS_JOB_ID_LEN);
    *p++ = '"';
    *p++ = '}';

    /* a plain header: headers_out.location would be made absolute */

    if (ngx_http_influencers_push_str(r, "X-Request-Id", ctx->request_id,
                                      NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN)
        != NGX_OK
        || ngx_http_influencers_push_str(r, "Location", location,
                                         p - 2 - location)
           != NGX_OK
        || ngx_http_influencers_reply_push_seconds(r, "Retry-After",
                                                   sizeof("Retry-After") - 1,
                                                   ticket->retry_after)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ticket->expires
        && ngx_http_influencers_reply_push_http_date(r, "Idempotency-Expires",
                                          sizeof("Idempotency-Expires") - 1,
                                          ticket->expires)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (replayed == NGX_HTTP_INFLUENCERS_REPLAYED
        && ngx_http_influencers_push_str(r, "Idempotent-Replayed",
                                         (u_char *) "true", 4)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers answer: 202 %*s%s",
                   (size_t) NGX_HTTP_INFLUENCERS_JOB_ID_LEN, ctx->job_id,
                   replayed == NGX_HTTP_INFLUENCERS_REPLAYED
                   ? ", replayed" : "");

    ngx_http_influencers_reply_count(r, NGX_HTTP_INFLUENCERS_ACCEPTED);

    return ngx_http_influencers_reply_send(r, NGX_HTTP_ACCEPTED, body,
                                           p - body);
}


/*
 * The handler of a location named in error_page: statuses that nginx
 * answers before the module runs (TRACE, a malformed request, a body over
 * client_max_body_size...) get the same JSON as the module's own.
 */

ngx_int_t
ngx_http_influencers_reply_errors_handler(ngx_http_request_t *r)
{
    u_char                      *request_id;
    ngx_uint_t                   status, answer;
    ngx_http_influencers_ctx_t  *ctx;

    status = r->err_status ? r->err_status : r->headers_out.status;

    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        answer = NGX_HTTP_INFLUENCERS_BAD_REQUEST;
        break;
    case NGX_HTTP_UNAUTHORIZED:
        answer = NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
        break;
    case NGX_HTTP_FORBIDDEN:
        answer = NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE;
        break;
    case NGX_HTTP_NOT_FOUND:
        answer = NGX_HTTP_INFLUENCERS_NO_ROUTE;
        break;
    case NGX_HTTP_NOT_ALLOWED:
        answer = NGX_HTTP_INFLUENCERS_METHOD_NOT_ALLOWED;
        break;
    case NGX_HTTP_REQUEST_TIME_OUT:
        answer = NGX_HTTP_INFLUENCERS_REQUEST_TIMEOUT;
        break;
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        answer = NGX_HTTP_INFLUENCERS_TOO_LARGE;
        break;
    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        answer = NGX_HTTP_INFLUENCERS_URI_TOO_LONG;
        break;
    case NGX_HTTP_UNSUPPORTED_MEDIA_TYPE:
        answer = NGX_HTTP_INFLUENCERS_MEDIA_TYPE;
        break;
    case NGX_HTTP_REQUEST_HEADER_TOO_LARGE:
        answer = NGX_HTTP_INFLUENCERS_HEADER_TOO_LARGE;
        break;
    case NGX_HTTP_NOT_IMPLEMENTED:
        answer = NGX_HTTP_INFLUENCERS_NOT_IMPLEMENTED;
        break;
    case NGX_HTTP_BAD_GATEWAY:
        answer = NGX_HTTP_INFLUENCERS_UPSTREAM_ERROR;
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        answer = NGX_HTTP_INFLUENCERS_UNAVAILABLE;
        break;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        answer = NGX_HTTP_INFLUENCERS_UPSTREAM_TIMEOUT;
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        answer = NGX_HTTP_INFLUENCERS_TOO_MANY_REQUESTS;
        break;
    case NGX_HTTP_VERSION_NOT_SUPPORTED:
        answer = NGX_HTTP_INFLUENCERS_VERSION_NOT_SUPPORTED;
        break;
    default:
        answer = NGX_HTTP_INFLUENCERS_INTERNAL;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers errors: nginx's %ui answered as %s",
                   status, ngx_http_influencers_answers_name(answer));

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    request_id = ngx_pnalloc(r->pool, NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN);
    if (request_id == NULL
        || ngx_http_influencers_ids_request_id(request_id, NULL) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * An internal redirect dropped the request's context: this location's
     * handler makes one, for the log's variables ($influencers_error).
     * Without memory for it, the answer goes all the same.
     */

    if (ngx_http_get_module_ctx(r, ngx_http_influencers_module) == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_influencers_ctx_t));

        if (ctx) {
            ngx_http_set_ctx(r, ctx, ngx_http_influencers_module);
        }
    }

    r->err_status = 0;

    /* nginx's own 409s and 503s ask for a retry in a second */

    return ngx_http_influencers_reply_send_answer(r, request_id, answer, NULL,
                                                  1);
}


ngx_int_t
ngx_http_influencers_reply_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    return ngx_http_influencers_reply_send(r, status, body->data, body->len);
}


static ngx_int_t
ngx_http_influencers_reply_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    r->headers_out.status = status;

    /*
     * nginx 1.22 has no reason phrase for 422 and would send "422 " with
     * none; every other status the module sends has one in nginx's table,
     * which a line set earlier must not override.  HTTP/2 sends the status
     * alone and never reads the line.
     */

    if (status == NGX_HTTP_INFLUENCERS_UNPROCESSABLE) {
        ngx_str_set(&r->headers_out.status_line,
                    "422 Unprocessable Content");

    } else {
        ngx_str_null(&r->headers_out.status_line);
    }

    return ngx_http_influencers_reply_send_body(r,
                                  &ngx_http_influencers_reply_json_type,
                                  ngx_http_influencers_reply_json_type.len,
                                  body, len);
}


/* a whole body of one buffer, for every answer the module writes itself */

ngx_int_t
ngx_http_influencers_reply_send_body(ngx_http_request_t *r, ngx_str_t *type,
    size_t type_len, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type_len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_influencers_reply_push(ngx_http_request_t *r, char *name,
                                size_t name_len,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.len = name_len;
    h->key.data = (u_char *) name;
    h->value.len = len;
    h->value.data = value;
    h->lowcase_key = NULL;

#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/* what "%T" writes, without ngx_sprintf() */

static ngx_int_t
ngx_http_influencers_reply_push_seconds(ngx_http_request_t *r, char *name,
    size_t name_len, time_t t)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = (t >= 0) ? ngx_http_influencers_ids_decimal(p, (uint64_t) t)
                    : ngx_sprintf(p, "%T", t);

    return ngx_http_influencers_reply_push(r, name, name_len, p, last - p);
}


/*
 * What ngx_http_time() writes, without its ngx_gmtime() and ngx_sprintf():
 * on every keyed accept and replay, the hot path of issue 9, where
 * ngx_sprintf()'s format walk is most of what a date costs.
 */

static ngx_int_t
ngx_http_influencers_reply_push_http_date(ngx_http_request_t *r, char *name,
    size_t name_len, time_t t)
{
    u_char  *p, *last;

    p = ngx_pnalloc(r->pool, sizeof("Mon, 28 Sep 1970 06:00:00 GMT") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_http_influencers_ids_http_time(p, t);

    return ngx_http_influencers_reply_push(r, name, name_len, p, last - p);
}


/* every answer counted, and kept for $influencers_error */

static void
ngx_http_influencers_reply_count(ngx_http_request_t *r, ngx_uint_t answer)
{
    ngx_http_influencers_ctx_t  *ctx;

    ngx_http_influencers_metrics_answer(r, answer);

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx) {
        ctx->answer = answer;
    }
}
