
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_answers.h"
#include "ngx_http_influencers_variables.h"


/* which of the job's ids $influencers_job_id and _influencer_id read */
#define NGX_HTTP_INFLUENCERS_VARIABLES_JOB_ID         0
#define NGX_HTTP_INFLUENCERS_VARIABLES_INFLUENCER_ID  1

static ngx_int_t ngx_http_influencers_variables_job(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_influencers_variables_idempotency(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_influencers_variables_error(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_influencers_variables_org(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_influencers_variables_status(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_influencers_variables_uri(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_influencers_variables_idem[] = {
    ngx_string("none"),
    ngx_string("claim"),
    ngx_string("replay"),
    ngx_string("conflict"),
    ngx_string("mismatch"),
    ngx_string("released"),
    ngx_string("resend")
};


static ngx_http_variable_t  ngx_http_influencers_variables_list[] = {

    { ngx_string("influencers_job_id"), NULL,
      ngx_http_influencers_variables_job,
      NGX_HTTP_INFLUENCERS_VARIABLES_JOB_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_influencer_id"), NULL,
      ngx_http_influencers_variables_job,
      NGX_HTTP_INFLUENCERS_VARIABLES_INFLUENCER_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_idempotency"), NULL,
      ngx_http_influencers_variables_idempotency, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_error"), NULL,
      ngx_http_influencers_variables_error, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_org"), NULL,
      ngx_http_influencers_variables_org, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_status"), NULL,
      ngx_http_influencers_variables_status, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("influencers_uri"), NULL,
      ngx_http_influencers_variables_uri, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_influencers_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_influencers_variables_list; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* log_format variables: never a key, the API key's or the partner's */

static ngx_int_t
ngx_http_influencers_variables_job(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_influencers_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL || !ctx->has_job) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* encoded once, when the job's ids became the request's */

    if (data == NGX_HTTP_INFLUENCERS_VARIABLES_JOB_ID) {
        v->len = NGX_HTTP_INFLUENCERS_JOB_ID_LEN;
        v->data = ctx->job_id;

    } else {
        v->len = NGX_HTTP_INFLUENCERS_INF_ID_LEN;
        v->data = ctx->influencer_id;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_variables_idempotency(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                   *s;
    ngx_http_influencers_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = &ngx_http_influencers_variables_idem[ctx->idempotency];

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_variables_error(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    const char                  *code;
    ngx_http_influencers_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    code = (ctx && ctx->answer != NGX_HTTP_INFLUENCERS_ACCEPTED)
           ? ngx_http_influencers_answers_name(ctx->answer) : NULL;

    if (code == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ngx_strlen(code);
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = (u_char *) code;

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_variables_org(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_influencers_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_influencers_module);

    if (ctx == NULL || ctx->job.org.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* an org is 1-64 visible ASCII characters, checked when it is read */

    v->len = ctx->job.org.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ctx->job.org.data;

    return NGX_OK;
}


/*
 * For a JSON log line, of any request: the status as a JSON number (0
 * when nothing was answered, where $status says "000"), and the URI as
 * the partner sent it ($request_uri: not the error page's an error_page
 * redirect makes of $uri) with every byte a JSON string cannot hold as it
 * is, or that is not ASCII, percent-encoded (a raw 0xFF, controls, a
 * quote).
 */

static ngx_int_t
ngx_http_influencers_variables_status(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char      *p;
    ngx_uint_t   status;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    v->len = ngx_sprintf(p, "%ui", status) - p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_variables_uri(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char     *p, *s, *end;
    ngx_uint_t  n;

    static u_char  hex[] = "0123456789ABCDEF";

    s = r->unparsed_uri.data;
    end = s + r->unparsed_uri.len;
    n = 0;

    for (p = s; p < end; p++) {
        n += (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\');
    }

    p = ngx_pnalloc(r->pool, r->unparsed_uri.len + 2 * n + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    for ( /* void */ ; s < end; s++) {
        if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\') {
            *p++ = '%';
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];
            continue;
        }

        *p++ = *s;
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
