
/*
 * Copyright (C) The influencers module authors.
 *
 * POST /v1/projects/:projectId/influencers at the gateway: the module
 * definition, its directives, and the handler that ties the pieces in
 * src/ together.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_identity.h"
#include "ngx_http_influencers_store.h"
#include "ngx_http_influencers_jansson.h"
#include "ngx_http_influencers_forward.h"
#include "ngx_http_influencers_reply.h"
#include "ngx_http_influencers_metrics.h"
#include "ngx_http_influencers_variables.h"


#define NGX_HTTP_INFLUENCERS_PREFIX  "/v1/projects/"
#define NGX_HTTP_INFLUENCERS_SUFFIX  "/influencers"


static ngx_int_t ngx_http_influencers_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_influencers_check_request(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer, ngx_str_t *details);
static ngx_uint_t ngx_http_influencers_is_json(ngx_http_request_t *r);
static ngx_int_t ngx_http_influencers_parse_path(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_uint_t *answer, ngx_str_t *details);
static ngx_int_t ngx_http_influencers_idempotency_header(
    ngx_http_request_t *r, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer, ngx_str_t *details);
static ngx_int_t ngx_http_influencers_reject(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_uint_t answer, ngx_str_t *details);
static void ngx_http_influencers_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_influencers_process(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx);
static ngx_int_t ngx_http_influencers_read_body(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, u_char **body, size_t *len);
static void ngx_http_influencers_resolve(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_body_t *b);
static ngx_int_t ngx_http_influencers_key_digest(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_claim_t *claim, u_char *body, size_t len);
static ngx_int_t ngx_http_influencers_digests(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_body_t *b,
    ngx_http_influencers_claim_t *claim);
static ngx_int_t ngx_http_influencers_claim(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_claim_t *claim);
static void ngx_http_influencers_claimed(ngx_http_request_t *r,
    ngx_http_influencers_store_e result);
static ngx_int_t ngx_http_influencers_act(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_store_e result);
static void ngx_http_influencers_cleanup(void *data);
static void ngx_http_influencers_job_ids(ngx_http_influencers_ctx_t *ctx);
static void ngx_http_influencers_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_influencers_conclude(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx);
static void ngx_http_influencers_finished(ngx_http_request_t *r,
    ngx_http_influencers_store_e result);
static ngx_int_t ngx_http_influencers_answer(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx);
static ngx_int_t ngx_http_influencers_details(ngx_http_request_t *r,
    ngx_http_influencers_body_t *b, ngx_str_t *out);
static ngx_int_t ngx_http_influencers_request_body_filter(
    ngx_http_request_t *r, ngx_chain_t *in);
static ngx_int_t ngx_http_influencers_stats_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_influencers_metrics_handler(ngx_http_request_t *r);

static ngx_int_t ngx_http_influencers_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_influencers_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_influencers_init_process(ngx_cycle_t *cycle);
static void ngx_http_influencers_exit_process(ngx_cycle_t *cycle);
static void ngx_http_influencers_exit_master(ngx_cycle_t *cycle);
static void *ngx_http_influencers_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_influencers_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_influencers(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_influencers_errors(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_influencers_stats(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_influencers_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_influencers_backend(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_influencers_directory(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_influencers_other_methods(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_influencers_check_time(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_influencers_check_limit(ngx_conf_t *cf, void *post,
    void *data);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;

static ngx_str_t  ngx_http_influencers_text_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");

/* this configuration's, random: see ngx_http_influencers_key_digest() */
static uint64_t  ngx_http_influencers_generation;


#if (NGX_DEBUG)

/* indexed by ngx_http_influencers_store_e, for the debug log */

static const char  *ngx_http_influencers_store_names[] = {
    "new: forward it", "replay", "busy", "mismatch", "full", "over share",
    "unavailable", "finished", "again", "the key's job in doubt: send it again",
    "not a retry of the same bytes", "stale", "lost"
};

#endif


static ngx_conf_post_t  ngx_http_influencers_time_post =
    { ngx_http_influencers_check_time };

static ngx_conf_post_t  ngx_http_influencers_limit_post =
    { ngx_http_influencers_check_limit };


static ngx_command_t  ngx_http_influencers_commands[] = {

    { ngx_string("influencers_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_influencers_store_zone_directive,
      0,
      0,
      NULL },

    { ngx_string("influencers_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_influencers_store_redis_directive,
      0,
      0,
      NULL },

    { ngx_string("influencers"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_influencers,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("influencers_errors"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_influencers_errors,
      0,
      0,
      NULL },

    { ngx_string("influencers_stats"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_influencers_stats,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("influencers_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_influencers_metrics,
      0,
      0,
      NULL },

    { ngx_string("influencers_backend"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_influencers_backend,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, backend),
      NULL },

    { ngx_string("influencers_body_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, body_limit),
      &ngx_http_influencers_limit_post },

    { ngx_string("influencers_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, retry_after),
      &ngx_http_influencers_time_post },

    { ngx_string("influencers_busy_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, busy_retry_after),
      &ngx_http_influencers_time_post },

    { ngx_string("influencers_directory"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_influencers_directory,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("influencers_org"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, org),
      NULL },

    { ngx_string("influencers_scopes"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, scopes),
      NULL },

    { ngx_string("influencers_target_gender"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_influencers_loc_conf_t, target_gender),
      NULL },

    { ngx_string("influencers_other_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_influencers_other_methods,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_influencers_module_ctx = {
    ngx_http_influencers_preconfiguration, /* preconfiguration */
    ngx_http_influencers_init,             /* postconfiguration */

    ngx_http_influencers_metrics_create_main_conf,
                                           /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_influencers_create_loc_conf,  /* create location configuration */
    ngx_http_influencers_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_influencers_module = {
    NGX_MODULE_V1,
    &ngx_http_influencers_module_ctx,      /* module context */
    ngx_http_influencers_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_influencers_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_influencers_exit_process,     /* exit process */
    ngx_http_influencers_exit_master,      /* exit master */
    NGX_MODULE_V1_PADDING
};


/* checks that need no body, in the contract's order */

static ngx_int_t
ngx_http_influencers_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_str_t                         details;
    ngx_uint_t                        answer;
    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    if (!(r->method & NGX_HTTP_POST) && ilcf->other_location.len) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: method \"%V\" handed to \"%V\"",
                       &r->method_name, &ilcf->other_location);

        return ngx_http_named_location(r, &ilcf->other_location);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_influencers_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_influencers_module);

    if (ngx_http_influencers_ids_request_id(ctx->request_id, ctx->request_raw)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    details.len = 0;

    if (ngx_http_influencers_check_request(r, ilcf, ctx, &answer, &details)
        != NGX_OK)
    {
        return ngx_http_influencers_reject(r, ctx, answer,
                                           details.len ? &details : NULL);
    }

    ctx->reading = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_influencers_body_handler);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: reading the body: %i", rc);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        /*
         * reading stopped midway (our filter, or client_max_body_size):
         * the rest of the body must not be parsed as the next request
         */
        r->keepalive = 0;
        r->lingering_close = 1;

        return ngx_http_influencers_reply_send_error(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_TOO_LARGE, NULL);
    }

    /* nginx answers the rest (400 bad framing, 500) and drops keepalive */

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * NGX_OK: every check passed.  NGX_DECLINED: *answer is the one that
 * refuses the request, and *details what it says, if anything.
 */

static ngx_int_t
ngx_http_influencers_check_request(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer, ngx_str_t *details)
{
    ngx_int_t  rc;

    if (!(r->method & NGX_HTTP_POST)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: method \"%V\" is not POST",
                       &r->method_name);
        *answer = NGX_HTTP_INFLUENCERS_METHOD_NOT_ALLOWED;
        return NGX_DECLINED;
    }

    rc = ngx_http_influencers_identity_authenticate(r, ilcf, ctx, answer);

    /* the org only: never the key, nor its digest */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: %s identity: org \"%V\", %s",
                   ilcf->directory ? "directory" : "variable",
                   &ctx->job.org,
                   rc == NGX_OK ? "influencers:write"
                                : ngx_http_influencers_answers_name(*answer));

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_influencers_parse_path(r, ctx, answer, details);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: path \"%V\": %s", &r->uri,
                   rc == NGX_OK ? "a project"
                                : ngx_http_influencers_answers_name(*answer));

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_influencers_identity_authorize_project(r, ilcf, ctx, answer);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: project membership: %s, target %ui",
                   rc == NGX_OK ? "the org's"
                                : ngx_http_influencers_answers_name(*answer),
                   ctx->target_gender);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_influencers_idempotency_header(r, ctx, answer, details);

    /* whether there is a key, and how long: never the key */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: Idempotency-Key: %s, %uz bytes: %s",
                   ctx->has_idem ? "sent" : "none", ctx->idem_len,
                   rc == NGX_OK ? "valid"
                                : ngx_http_influencers_answers_name(*answer));

    if (rc != NGX_OK) {
        return rc;
    }

    if (r->headers_in.content_length_n > (off_t) ilcf->body_limit) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: Content-Length %O over the limit %uz",
                       r->headers_in.content_length_n, ilcf->body_limit);
        *answer = NGX_HTTP_INFLUENCERS_TOO_LARGE;
        return NGX_DECLINED;
    }

    /* a chunked body's type is checked once it is known to be non-empty */

    ctx->type_unchecked = (r->headers_in.content_length_n <= 0);

    if (r->headers_in.content_length_n > 0
        && !ngx_http_influencers_is_json(r))
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: Content-Type is not JSON");
        *answer = NGX_HTTP_INFLUENCERS_MEDIA_TYPE;
        return NGX_DECLINED;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: checks passed, Content-Length %O%s",
                   r->headers_in.content_length_n,
                   ctx->type_unchecked ? ", type checked later" : "");

    return NGX_OK;
}


static ngx_uint_t
ngx_http_influencers_is_json(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = r->headers_in.content_type;

    return h != NULL
           && ngx_http_influencers_validate_check_content_type(h->value.data,
                                                               h->value.len)
              == 0;
}


static ngx_int_t
ngx_http_influencers_parse_path(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_uint_t *answer, ngx_str_t *details)
{
    size_t   prefix, suffix;
    u_char  *id;
    size_t   len;

    prefix = sizeof(NGX_HTTP_INFLUENCERS_PREFIX) - 1;
    suffix = sizeof(NGX_HTTP_INFLUENCERS_SUFFIX) - 1;

    if (r->uri.len <= prefix + suffix
        || ngx_strncmp(r->uri.data, NGX_HTTP_INFLUENCERS_PREFIX, prefix) != 0
        || ngx_strncmp(r->uri.data + r->uri.len - suffix,
                       NGX_HTTP_INFLUENCERS_SUFFIX, suffix)
           != 0)
    {
        *answer = NGX_HTTP_INFLUENCERS_NOT_FOUND;
        return NGX_DECLINED;
    }

    id = r->uri.data + prefix;
    len = r->uri.len - prefix - suffix;

    if (ngx_strlchr(id, id + len, '/') != NULL) {
        *answer = NGX_HTTP_INFLUENCERS_NOT_FOUND;
        return NGX_DECLINED;
    }

    if (ngx_http_influencers_validate_parse_uuid(id, len,
                                                 ctx->job.project) != 0) {
        ngx_str_set(details, "{\"formErrors\":[],\"fieldErrors\":"
                             "{\"projectId\":[\"Invalid uuid\"]}}");
        *answer = NGX_HTTP_INFLUENCERS_INVALID_PATH;
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_idempotency_header(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_uint_t *answer, ngx_str_t *details)
{
    ssize_t           n;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *key;

    found = 0;
    key = NULL;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("idempotency-key") - 1
            && ngx_strncmp(h[i].lowcase_key, "idempotency-key",
                           sizeof("idempotency-key") - 1) == 0)
        {
            found++;
            key = &h[i];
        }
    }

    if (found == 0) {
        return NGX_OK;
    }

    if (found > 1) {
        ngx_str_set(details, "{\"formErrors\":[],\"fieldErrors\":"
                             "{\"Idempotency-Key\":[\"Must be sent once.\"]}}");
        *answer = NGX_HTTP_INFLUENCERS_INVALID_IDEM;
        return NGX_DECLINED;
    }

    n = -1;

    if (key->value.len <= 2 * NGX_HTTP_INFLUENCERS_IDEM_MAX + 2) {
        n = ngx_http_influencers_validate_parse_idempotency_key(key->value.data,
                                                                key->value.len,
                                                                ctx->idem);
    }

    if (n < 0) {
        ngx_str_set(details, "{\"formErrors\":[],\"fieldErrors\":"
                             "{\"Idempotency-Key\":[\"Must be 1-255 visible "
                             "ASCII characters.\"]}}");
        *answer = NGX_HTTP_INFLUENCERS_INVALID_IDEM;
        return NGX_DECLINED;
    }

    ctx->idem_len = n;
    ctx->has_idem = 1;

    return NGX_OK;
}


/* an answer before the body is read: the body is discarded, not parsed */

static ngx_int_t
ngx_http_influencers_reject(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_uint_t answer, ngx_str_t *details)
{
    if (answer == NGX_HTTP_INFLUENCERS_INTERNAL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "influencers: request refused, %s",
                  ngx_http_influencers_answers_name(answer));

    if (answer != NGX_HTTP_INFLUENCERS_TOO_LARGE) {
        /* no "100 Continue" for a request that is refused anyway */
        r->expect_tested = 1;

        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }
    }

    return ngx_http_influencers_reply_send_error(r, ctx->request_id, answer,
                                                 details);
}


static void
ngx_http_influencers_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    ctx->reading = 0;

    rc = ngx_http_influencers_process(r, ilcf, ctx);

    if (rc == NGX_DONE) {
        /* forwarding: the subrequest's end resumes the request */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_influencers_process(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx)
{
    size_t                           len;
    u_char                          *body;
    ngx_int_t                        rc;
    ngx_str_t                        details;
    ngx_http_influencers_body_t      b;
    ngx_http_influencers_claim_t     claim;
    ngx_http_influencers_body_rc_e   checked;

    /* a body that cannot be read is never taken for an empty one */

    if (ngx_http_influencers_read_body(r, ilcf, &body, &len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the body's size only: never its bytes */

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: body of %uz bytes read", len);

    if (len && ctx->type_unchecked && !ngx_http_influencers_is_json(r)) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: a chunked body's type is not JSON");

        return ngx_http_influencers_reply_send_error(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_MEDIA_TYPE, NULL);
    }

    claim.idem = NULL;
    claim.body = 0;

    if (ctx->has_idem) {
        if (ngx_http_influencers_key_digest(r, ilcf, ctx, &claim, body, len)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_influencers_store_replay(ilcf->shm_zone->data, &claim,
                                              &ctx->ticket,
                                              r->connection->log)
            == NGX_HTTP_INFLUENCERS_STORE_REPLAY)
        {
            return ngx_http_influencers_act(r, ilcf, ctx,
                                            NGX_HTTP_INFLUENCERS_STORE_REPLAY);
        }
    }

    checked = ngx_http_influencers_jansson_body_check(r->pool, &b, body, len);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: body parsed: %s",
                   checked == NGX_HTTP_INFLUENCERS_BODY_VALID ? "valid"
                   : (checked == NGX_HTTP_INFLUENCERS_BODY_INVALID
                      ? "invalid" : "failed"));

    if (checked == NGX_HTTP_INFLUENCERS_BODY_INVALID) {
        rc = ngx_http_influencers_details(r, &b, &details);
        ngx_http_influencers_validate_body_free(&b);

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "influencers: invalid body, %V", &details);

        return ngx_http_influencers_reply_send_error(r, ctx->request_id,
                                          NGX_HTTP_INFLUENCERS_INVALID_BODY,
                                          &details);
    }

    if (checked != NGX_HTTP_INFLUENCERS_BODY_VALID) {
        ngx_http_influencers_validate_body_free(&b);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: out of memory while parsing the body");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_influencers_resolve(r, ctx, &b);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: job: gender %s, ageRange %s, %s",
                   ngx_http_influencers_genders[ctx->job.gender].name,
                   ngx_http_influencers_age_ranges[ctx->job.age_range].name,
                   ctx->job.has_prompt ? "a prompt" : "no prompt");

    rc = ngx_http_influencers_digests(r, ctx, &b, &claim);

    ngx_http_influencers_validate_body_free(&b);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_influencers_claim(r, ilcf, ctx, &claim);
}


/*
 * The body in one piece: one buffer in memory as it is, anything else
 * copied once.  A temporary file does not mean a large body: nginx spills
 * the body to one as soon as the raw bytes it reads, chunk framing
 * included, fill client_body_buffer_size, so a small body sent in tiny
 * chunks lands there.  The decoded body is what the limit is about.
 *
 * NGX_OK: the body is in *body and *len (none: NULL and 0); NGX_ERROR:
 * logged here, a 500 for the caller, which sends nothing of its own.
 */

static ngx_int_t
ngx_http_influencers_read_body(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, u_char **body, size_t *len)
{
    off_t         n, size;
    u_char       *p;
    ssize_t       got;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *body = NULL;
    *len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    n = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        n += ngx_buf_size(cl->buf);
    }

    /*
     * Never more than the limit: the request body filter refuses more,
     * and a body that another module (mirror) read before the handler ran
     * was refused by its length, which nginx sets to the decoded total.
     * Checked all the same, since it bounds what is read back.
     */

    if (n > (off_t) ilcf->body_limit) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: request body of %O bytes got past "
                      "the %uz-byte limit", n, ilcf->body_limit);
        return NGX_ERROR;
    }

    b = r->request_body->bufs->buf;

    if (r->request_body->bufs->next == NULL && ngx_buf_in_memory(b)) {
        *body = b->pos;
        *len = (size_t) n;
        return NGX_OK;
    }

    if (n == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) n);
    if (p == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: no memory for a request body of %O bytes",
                      n);
        return NGX_ERROR;
    }

    *body = p;
    *len = (size_t) n;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        size = b->file_last - b->file_pos;

        if (!b->in_file || size == 0) {
            continue;
        }

        got = ngx_read_file(b->file, p, (size_t) size, b->file_pos);

        if (got != (ssize_t) size) {
            /* ngx_read_file() logs a failed pread() itself */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "influencers: request body file \"%V\": read %z "
                          "of %O bytes at %O", &b->file->name, got, size,
                          b->file_pos);
            return NGX_ERROR;
        }

        p += size;
    }

    return NGX_OK;
}


/* the job's parameters: what was sent, else the project's defaults */

static void
ngx_http_influencers_resolve(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_body_t *b)
{
    ngx_http_influencers_job_t  *job;

    job = &ctx->job;

    if (b->gender) {
        job->gender = b->gender;

    } else if (ctx->target_gender == NGX_HTTP_INFLUENCERS_GENDER_MALE
               || ctx->target_gender == NGX_HTTP_INFLUENCERS_GENDER_FEMALE)
    {
        job->gender = ctx->target_gender;

    } else {
        job->gender = NGX_HTTP_INFLUENCERS_GENDER_FEMALE;
    }

    job->age_range = b->age_range ? b->age_range
                                  : NGX_HTTP_INFLUENCERS_AGE_YOUNG_ADULT;

    if (b->prompt) {
        job->has_prompt = 1;
        job->prompt_len = b->prompt_len;
        ngx_memcpy(job->prompt, b->prompt, b->prompt_len);
    }
}


/*
 * The idempotency key is (org, Idempotency-Key); the fingerprint is the
 * method, the canonical path and the body's meaning: keys sorted, no
 * insignificant whitespace, strings encoded one way, empty is "{}"
 * (ngx_http_influencers_validate_body_canonical(): the bytes never change).
 */

static ngx_int_t
ngx_http_influencers_digests(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx, ngx_http_influencers_body_t *b,
    ngx_http_influencers_claim_t *claim)
{
    u_char  *p;
    u_char   fingerprint[sizeof("POST ") - 1
                         + sizeof(NGX_HTTP_INFLUENCERS_PREFIX) - 1
                         + NGX_HTTP_INFLUENCERS_UUID_LEN
                         + sizeof(NGX_HTTP_INFLUENCERS_SUFFIX) - 1
                         + sizeof("\n") - 1
                         + NGX_HTTP_INFLUENCERS_CANONICAL_MAX];

    /* the project as the forward and the fingerprint write it */
    ngx_http_influencers_validate_format_uuid(ctx->job.project,
                                              ctx->project_id);

    claim->gender = ctx->job.gender;
    claim->age_range = ctx->job.age_range;
    claim->request_id = ctx->request_raw;
    claim->org_hash = ngx_http_influencers_store_org_hash(ctx->job.org.data,
                                                          ctx->job.org.len);

    if (ngx_http_influencers_ids_random((u_char *) &claim->random,
                                        sizeof(claim->random))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ctx->has_idem) {
        ngx_memzero(claim->fingerprint, NGX_HTTP_INFLUENCERS_SHA256_LEN);
        return NGX_OK;
    }

    p = ngx_cpymem(fingerprint, "POST " NGX_HTTP_INFLUENCERS_PREFIX,
                   sizeof("POST " NGX_HTTP_INFLUENCERS_PREFIX) - 1);
    p = ngx_cpymem(p, ctx->project_id, NGX_HTTP_INFLUENCERS_UUID_LEN);
    p = ngx_cpymem(p, NGX_HTTP_INFLUENCERS_SUFFIX "\n",
                   sizeof(NGX_HTTP_INFLUENCERS_SUFFIX "\n") - 1);
    p += ngx_http_influencers_validate_body_canonical(b, p);

    if (ngx_http_influencers_ids_sha256(fingerprint, p - fingerprint,
                                        claim->fingerprint)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: computing the request's fingerprint "
                      "failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * What a keyed request is known by before its body is parsed: the key's
 * digest (the org's and the key's bytes laid out in one buffer, hashed in
 * one call: an update costs more than copying a few dozen bytes; orgs are
 * at most NGX_HTTP_INFLUENCERS_ORG_MAX bytes, checked where they are
 * read), and the keyed hash of the body's bytes under this location's
 * configuration, by which a retry of the same bytes is replayed unparsed.
 */

static ngx_int_t
ngx_http_influencers_key_digest(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_claim_t *claim, u_char *body, size_t len)
{
    u_char     *p;
    uint64_t    conf[2];
    u_char      prefix[sizeof(conf) + NGX_HTTP_INFLUENCERS_UUID_BYTES];
    u_char      key[1 + NGX_HTTP_INFLUENCERS_ORG_MAX
                    + NGX_HTTP_INFLUENCERS_IDEM_MAX];

    p = key;
    *p++ = (u_char) ctx->job.org.len;
    p = ngx_cpymem(p, ctx->job.org.data, ctx->job.org.len);
    p = ngx_cpymem(p, ctx->idem, ctx->idem_len);

    if (ngx_http_influencers_ids_sha256(key, p - key, claim->key) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: computing the key's digest failed");
        return NGX_ERROR;
    }

    claim->idem = claim->key;

    /* this configuration (a reload makes another), this location, project */

    conf[0] = ngx_http_influencers_generation;
    conf[1] = (uint64_t) (uintptr_t) ilcf;

    ngx_memcpy(prefix, conf, sizeof(conf));
    ngx_memcpy(prefix + sizeof(conf), ctx->job.project,
               NGX_HTTP_INFLUENCERS_UUID_BYTES);

    claim->body = ngx_http_influencers_store_body_hash(ilcf->shm_zone->data,
                                                       prefix, sizeof(prefix),
                                                       body, len);

    return NGX_OK;
}


/*
 * The idempotency store: the zone answers at once; in fleet mode a new key
 * is asked of Redis too, and the answer resumes the request.
 */

static ngx_int_t
ngx_http_influencers_claim(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_claim_t *claim)
{
    ngx_http_cleanup_t            *cln;
    ngx_http_influencers_store_e   result;

    ctx->ticket.retry_after = ilcf->retry_after;

    /*
     * From the claim on, the store is owed an answer however the request
     * ends: an HTTP/2 stream reset or a closed connection terminates it
     * without resuming it.
     */

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_influencers_cleanup;
    cln->data = r;

    result = ngx_http_influencers_store_claim(r, ilcf->shm_zone->data, claim,
                                              &ctx->ticket,
                                              ngx_http_influencers_claimed);

    if (result == NGX_HTTP_INFLUENCERS_STORE_AGAIN) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: claim waits for the store");

        /* the body's reference keeps the request until then */
        return NGX_DONE;
    }

    return ngx_http_influencers_act(r, ilcf, ctx, result);
}


static void
ngx_http_influencers_claimed(ngx_http_request_t *r,
    ngx_http_influencers_store_e result)
{
    ngx_int_t                         rc;
    ngx_connection_t                 *c;
    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    rc = ngx_http_influencers_act(r, ilcf, ctx, result);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }

    /* called from Redis's connection: the subrequest waits to be run */

    ngx_http_run_posted_requests(c);
}


/* what the store said: an answer from it, or the forward */

static ngx_int_t
ngx_http_influencers_act(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_http_influencers_store_e result)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: the store answered: %s",
                   ngx_http_influencers_store_names[result]);

    switch (result) {

    case NGX_HTTP_INFLUENCERS_STORE_NEW:
        ngx_http_influencers_job_ids(ctx);
        ngx_memcpy(ctx->job_request_id, ctx->request_id,
                   NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN);
        ctx->idempotency = ctx->has_idem ? NGX_HTTP_INFLUENCERS_IDEM_CLAIM
                                         : NGX_HTTP_INFLUENCERS_IDEM_NONE;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_RESEND:

        /* the key's job in doubt: sent again as it was first sent */

        ngx_http_influencers_job_ids(ctx);
        ngx_http_influencers_ids_request_id_text(ctx->job_request_id,
                                                 ctx->ticket.request_id);
        ctx->job.gender = ctx->ticket.gender;
        ctx->job.age_range = ctx->ticket.age_range;
        ctx->idempotency = NGX_HTTP_INFLUENCERS_IDEM_RESEND;
        break;

    case NGX_HTTP_INFLUENCERS_STORE_REPLAY:
        ngx_http_influencers_job_ids(ctx);
        ctx->idempotency = NGX_HTTP_INFLUENCERS_IDEM_REPLAY;

        return ngx_http_influencers_reply_send_accepted(r, ctx,
                                               NGX_HTTP_INFLUENCERS_REPLAYED);

    case NGX_HTTP_INFLUENCERS_STORE_BUSY:
        ctx->idempotency = NGX_HTTP_INFLUENCERS_IDEM_CONFLICT;

        return ngx_http_influencers_reply_send_busy(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_IN_PROGRESS, ilcf->busy_retry_after);

    case NGX_HTTP_INFLUENCERS_STORE_MISMATCH:
        ctx->idempotency = NGX_HTTP_INFLUENCERS_IDEM_MISMATCH;

        return ngx_http_influencers_reply_send_error(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_KEY_REUSED, NULL);

    case NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE:
        return ngx_http_influencers_reply_send_busy(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_UNAVAILABLE, ilcf->busy_retry_after);

    default: /* FULL, OVER_SHARE */
        return ngx_http_influencers_reply_send_busy(r, ctx->request_id,
            NGX_HTTP_INFLUENCERS_CAPACITY, ilcf->busy_retry_after);
    }

    /* from here the store is owed the forward's outcome */

    ctx->claimed = 1;

    if (ngx_http_influencers_forward(r, ctx, &ilcf->backend) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: could not start the forward to \"%V\"",
                      &ilcf->backend);

        /* nothing was sent: as for any forward that failed for sure */

        ctx->done = 1;
        ctx->forward = NGX_HTTP_INFLUENCERS_FORWARD_NOT_STARTED;

        return ngx_http_influencers_conclude(r, ilcf, ctx);
    }

    r->write_event_handler = ngx_http_influencers_resume;

    return NGX_DONE;
}


/*
 * The request ends before the store is done with it: its stream was
 * reset, its connection closed, its worker exits.  What it waits for from
 * the store is called off; the store gets the forward's outcome if the
 * forward ended, else the job is in doubt; nobody waits for the answer.
 */

static void
ngx_http_influencers_cleanup(void *data)
{
    ngx_http_request_t *r = data;

    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL) {
        return;
    }

    ngx_http_influencers_store_cleanup(&ctx->ticket);

    if (!ctx->claimed) {
        return;
    }

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    if (!ctx->done) {
        ctx->forward = NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "influencers: the partner left before the answer, the "
                  "forward's outcome (%s) goes to the store",
                  ngx_http_influencers_forward_verdict(ctx->forward));

    ctx->claimed = 0;

    (void) ngx_http_influencers_store_finish(r, ilcf->shm_zone->data,
                                             &ctx->ticket, ctx->forward, NULL);
}


/*
 * The job's ids as text, once: the forward, its header, the reply and the
 * log's variables use them
 */

static void
ngx_http_influencers_job_ids(ngx_http_influencers_ctx_t *ctx)
{
    ngx_memcpy(ctx->job_id, "job_", sizeof("job_") - 1);
    ngx_http_influencers_ids_ulid_encode(ctx->ticket.job_id,
                                         ctx->job_id + sizeof("job_") - 1);

    ngx_memcpy(ctx->influencer_id, "inf_", sizeof("inf_") - 1);
    ngx_http_influencers_ids_hex(ctx->influencer_id + sizeof("inf_") - 1,
                                 ctx->ticket.influencer_id,
                                 NGX_HTTP_INFLUENCERS_ID_BYTES);

    ctx->has_job = 1;
}


/* the forward has ended: its outcome to the store, then to the partner */

static void
ngx_http_influencers_resume(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL || !ctx->done) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: woken before the forward ended");
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    rc = ngx_http_influencers_conclude(r, ilcf, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_influencers_conclude(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx)
{
    ngx_http_influencers_forward_e  outcome;

    outcome = ctx->forward;

    if (ngx_http_influencers_forward_failed(outcome) && ctx->has_idem
        && !ctx->ticket.resend)
    {
        /* the store gives the key back: a retry is a new job */
        ctx->idempotency = NGX_HTTP_INFLUENCERS_IDEM_RELEASED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: the forward's outcome to the store: %s",
                   ngx_http_influencers_forward_in_doubt(outcome)
                   ? "unknown, the key keeps its job"
                   : ngx_http_influencers_forward_verdict(outcome));

    ctx->claimed = 0;

    if (ngx_http_influencers_store_finish(r, ilcf->shm_zone->data,
                                          &ctx->ticket, outcome,
                                          ngx_http_influencers_finished)
        == NGX_HTTP_INFLUENCERS_STORE_AGAIN)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers: finish waits for the store");
        return NGX_DONE;
    }

    return ngx_http_influencers_answer(r, ctx);
}


static void
ngx_http_influencers_finished(ngx_http_request_t *r,
    ngx_http_influencers_store_e result)
{
    ngx_connection_t            *c;
    ngx_http_influencers_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    ngx_http_finalize_request(r, ngx_http_influencers_answer(r, ctx));
    ngx_http_run_posted_requests(c);
}


/*
 * The partner hears of its job: accepted by this forward, or by another
 * forward of the same job (its first, still running when this one was
 * sent), which a retry would replay anyway.
 */

static ngx_int_t
ngx_http_influencers_answer(ngx_http_request_t *r,
    ngx_http_influencers_ctx_t *ctx)
{
    ngx_uint_t  accepted, answer;

    accepted = (ctx->forward == NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED);

    if (accepted || ctx->ticket.landed) {
        return ngx_http_influencers_reply_send_accepted(r, ctx,
                                       (ctx->ticket.resend || !accepted)
                                       ? NGX_HTTP_INFLUENCERS_REPLAYED
                                       : NGX_HTTP_INFLUENCERS_FIRST_ANSWER);
    }

    answer = ngx_http_influencers_forward_answer(ctx->forward);

    return ngx_http_influencers_reply_send_error(r, ctx->request_id, answer,
                                                 NULL);
}


static ngx_int_t
ngx_http_influencers_details(ngx_http_request_t *r,
    ngx_http_influencers_body_t *b, ngx_str_t *out)
{
    out->data = ngx_pnalloc(r->pool,
                            ngx_http_influencers_validate_body_errors_len(b));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_http_influencers_validate_body_errors(b,
                                                         out->data) - out->data;

    return NGX_OK;
}


/*
 * The body limit holds while a chunked body is read, before it is all
 * buffered: the filter sees the decoded bytes as they come, so chunk
 * framing never counts against it.
 */

static ngx_int_t
ngx_http_influencers_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_chain_t                      *cl;
    ngx_http_influencers_ctx_t       *ctx;
    ngx_http_influencers_loc_conf_t  *ilcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL || !ctx->reading) {
        return ngx_http_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        ctx->received += ngx_buf_size(cl->buf);
    }

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers: body filter: %uz bytes of %uz",
                   ctx->received, ilcf->body_limit);

    if (ctx->received > ilcf->body_limit) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "influencers: request body is larger than %uz bytes",
                      ilcf->body_limit);

        /* the client may still be sending: let it read the 413 */
        r->lingering_close = 1;

        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_next_request_body_filter(r, in);
}


/* influencers_stats: one zone's counters as JSON */

static ngx_int_t
ngx_http_influencers_stats_handler(ngx_http_request_t *r)
{
    ngx_str_t                         body;
    ngx_http_influencers_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_influencers_module);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_influencers_metrics_stats(r, ilcf->stats_zone->data, &body)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_influencers_reply_send_json(r, NGX_HTTP_OK, &body);
}


/* influencers_metrics: every zone's counters and the module's */

static ngx_int_t
ngx_http_influencers_metrics_handler(ngx_http_request_t *r)
{
    ngx_str_t  body;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_influencers_metrics_prometheus(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;

    return ngx_http_influencers_reply_send_body(r,
                                                &ngx_http_influencers_text_type,
                                                sizeof("text/plain") - 1,
                                                body.data, body.len);
}


static ngx_int_t
ngx_http_influencers_preconfiguration(ngx_conf_t *cf)
{
    /* before the directory file is read with jansson */
    ngx_http_influencers_jansson_init();

    return ngx_http_influencers_variables_add(cf);
}


static ngx_int_t
ngx_http_influencers_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_influencers_request_body_filter;

    /*
     * a body's bytes recognised under one configuration are not under the
     * next: the directory or a directive may validate them otherwise
     */

    if (ngx_http_influencers_ids_random(
            (u_char *) &ngx_http_influencers_generation, sizeof(uint64_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_influencers_forward_init(cf);
}


static ngx_int_t
ngx_http_influencers_init_process(ngx_cycle_t *cycle)
{
    ngx_http_influencers_ids_init_process();

    return ngx_http_influencers_store_init_process(cycle);
}


static void
ngx_http_influencers_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_influencers_store_exit_process(cycle);
    ngx_http_influencers_ids_exit_process();
}


static void
ngx_http_influencers_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_influencers_store_exit_master(cycle);
}


static void *
ngx_http_influencers_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_influencers_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->shm_zone = NULL;
     *     conf->backend = { 0, NULL };
     *     conf->other_location = { 0, NULL };
     */

    conf->body_limit = NGX_CONF_UNSET_SIZE;
    conf->retry_after = NGX_CONF_UNSET;
    conf->busy_retry_after = NGX_CONF_UNSET;
    conf->directory = NGX_CONF_UNSET_PTR;
    conf->org = NGX_CONF_UNSET_PTR;
    conf->scopes = NGX_CONF_UNSET_PTR;
    conf->target_gender = NGX_CONF_UNSET_PTR;
    conf->other_methods = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_influencers_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_influencers_loc_conf_t *prev = parent;
    ngx_http_influencers_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_str_value(conf->backend, prev->backend, "");
    ngx_conf_merge_size_value(conf->body_limit, prev->body_limit, 4096);
    ngx_conf_merge_sec_value(conf->retry_after, prev->retry_after, 5);
    ngx_conf_merge_sec_value(conf->busy_retry_after, prev->busy_retry_after,
                             1);

    if (conf->other_methods == NGX_CONF_UNSET) {
        conf->other_methods = prev->other_methods;
        conf->other_location = prev->other_location;
    }

    if (conf->other_methods == NGX_CONF_UNSET) {
        conf->other_methods = NGX_HTTP_NOT_ALLOWED;
    }

    /* an identity source set here replaces an inherited one of any kind */

    if (conf->directory == NGX_CONF_UNSET_PTR
        && conf->org == NGX_CONF_UNSET_PTR)
    {
        conf->directory = prev->directory;
        conf->org = prev->org;
    }

    ngx_conf_merge_ptr_value(conf->directory, NULL, NULL);
    ngx_conf_merge_ptr_value(conf->org, NULL, NULL);
    ngx_conf_merge_ptr_value(conf->scopes, prev->scopes, NULL);
    ngx_conf_merge_ptr_value(conf->target_gender, prev->target_gender, NULL);

    if (conf->directory && conf->org) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_directory\" and \"influencers_org\" "
                           "are both set in one block: choose one identity "
                           "source");
        return NGX_CONF_ERROR;
    }

    if (conf->shm_zone == NULL) {
        return NGX_CONF_OK;
    }

    /* the checks below concern a location that serves the endpoint */

    if (conf->backend.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers\" is on but no "
                           "\"influencers_backend\" is set for it");
        return NGX_CONF_ERROR;
    }

    if (conf->directory == NULL && conf->org == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers\" is on but has no identity "
                           "source: set \"influencers_directory\" or "
                           "\"influencers_org\"");
        return NGX_CONF_ERROR;
    }

    if (conf->org && conf->scopes == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_org\" needs \"influencers_scopes\"");
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * A body spilled to a temporary file is read back, so neither check
     * is needed for correctness: they keep an ordinary body off the disk
     * (only chunk framing can still push a small one there).
     */

    if (conf->body_limit > clcf->client_body_buffer_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_body_limit\" %uz is larger than "
                           "\"client_body_buffer_size\" %uz: bodies within "
                           "the limit would be written to temporary files",
                           conf->body_limit, clcf->client_body_buffer_size);
        return NGX_CONF_ERROR;
    }

    if (clcf->client_body_in_file_only) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"client_body_in_file_only\" must be off where "
                           "\"influencers\" is on: it writes every body "
                           "to disk");
        return NGX_CONF_ERROR;
    }

    if (clcf->client_max_body_size
        && (off_t) conf->body_limit > clcf->client_max_body_size)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"influencers_body_limit\" %uz is larger than "
                           "\"client_max_body_size\" %O",
                           conf->body_limit, clcf->client_max_body_size);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* influencers zone=name | off */

static char *
ngx_http_influencers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_influencers_loc_conf_t *ilcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (ilcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ilcf->shm_zone = ngx_http_influencers_store_ref(cf, &value[1]);
    if (ilcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_influencers_metrics_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_influencers_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_stats(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_influencers_loc_conf_t *ilcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    value = cf->args->elts;

    ilcf->stats_zone = ngx_http_influencers_store_ref(cf, &value[1]);
    if (ilcf->stats_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_influencers_stats_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_errors(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_http_influencers_metrics_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_influencers_reply_errors_handler;

    /*
     * An HTTP/2 request whose content-length is over client_max_body_size
     * is checked again when error_page brings it here: nginx's own HTML
     * 413 would answer.  The body is never read here.  A limit set above
     * this directive in the location stays.
     */

    if (clcf->client_max_body_size == NGX_CONF_UNSET) {
        clcf->client_max_body_size = 0;
    }

    return NGX_CONF_OK;
}


/* every zone's counters and the module's, in Prometheus's text format */

static char *
ngx_http_influencers_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_http_influencers_metrics_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_influencers_metrics_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_backend(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid backend \"%V\": an internal URI "
                           "starting with \"/\" is expected (named "
                           "locations cannot take subrequests)", &value[1]);
        return NGX_CONF_ERROR;
    }

    return ngx_conf_set_str_slot(cf, cmd, conf);
}


static char *
ngx_http_influencers_directory(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_influencers_loc_conf_t *ilcf = conf;

    ngx_str_t  *value;

    if (ilcf->directory != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ilcf->directory = ngx_http_influencers_identity_directory_load(cf,
                                                                   &value[1]);

    return ilcf->directory ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static char *
ngx_http_influencers_other_methods(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_influencers_loc_conf_t *ilcf = conf;

    ngx_str_t  *value;

    if (ilcf->other_methods != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "405", 3) == 0) {
        ilcf->other_methods = NGX_HTTP_NOT_ALLOWED;
        return NGX_CONF_OK;
    }

    if (value[1].len > 1 && value[1].data[0] == '@') {
        ilcf->other_methods = 0;
        ilcf->other_location = value[1];
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\": \"405\" or a named location "
                       "(\"@name\") is expected", &value[1]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_influencers_check_time(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *t = data;

    if (*t > 24 * 60 * 60) {
        return "must be at most 1d";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_influencers_check_limit(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *n = data;

    if (*n == 0) {
        return "must not be zero";
    }

    return NGX_CONF_OK;
}
