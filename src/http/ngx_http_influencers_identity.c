
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_identity.h"
#include "ngx_http_influencers_answers.h"


typedef struct {
    u_char                 digest[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    ngx_str_t              org;
    ngx_uint_t             write;
} ngx_http_influencers_key_t;


typedef struct {
    u_char                 id[NGX_HTTP_INFLUENCERS_UUID_BYTES];
    ngx_str_t              org;
    ngx_uint_t             target_gender;
} ngx_http_influencers_project_t;


struct ngx_http_influencers_directory_s {
    ngx_array_t            keys;        /* sorted by digest */
    ngx_array_t            projects;    /* sorted by id */
};


typedef struct {
    ngx_conf_t            *cf;
    u_char                *file;
} ngx_http_influencers_identity_loader_t;


static ngx_http_influencers_directory_t *
    ngx_http_influencers_identity_directory_keep(ngx_conf_t *cf,
    ngx_http_influencers_dir_t *d);
static ngx_int_t ngx_http_influencers_identity_keep_org(ngx_conf_t *cf,
    ngx_str_t *org, const char *data, size_t len);
static void ngx_cdecl ngx_http_influencers_identity_dir_error(
    ngx_http_influencers_identity_loader_t *ld, const char *fmt, ...);
static int ngx_libc_cdecl ngx_http_influencers_identity_key_cmp(const void *a,
    const void *b);
static int ngx_libc_cdecl ngx_http_influencers_identity_project_cmp(
    const void *a, const void *b);


/*
 * The file is read here, and checked in ngx_http_influencers_directory.c,
 * which knows nothing of nginx: what it accepts is copied to the
 * configuration's pool, what it refuses is reported as the file's error.
 */

ngx_http_influencers_directory_t *
ngx_http_influencers_identity_directory_load(ngx_conf_t *cf, ngx_str_t *file)
{
    int                                 rc;
    json_t                             *root;
    ngx_str_t                           path;
    json_error_t                        err;
    ngx_http_influencers_dir_t          d;
    ngx_http_influencers_identity_loader_t       ld;
    ngx_http_influencers_directory_t   *dir;

    path = *file;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NULL;
    }

    ld.cf = cf;
    ld.file = path.data;    /* ngx_conf_full_name() NUL-terminates */

    root = json_load_file((char *) path.data, JSON_REJECT_DUPLICATES, &err);

    if (root == NULL) {
        if (json_error_code(&err) == json_error_cannot_open_file) {
            ngx_http_influencers_identity_dir_error(&ld,
                                                    "cannot open the file (%s)",
                                           err.text);
        } else {
            ngx_http_influencers_identity_dir_error(&ld,
                                  "invalid JSON at line %d, column %d: %s",
                                  err.line, err.column, err.text);
        }

        return NULL;
    }

    rc = ngx_http_influencers_directory_parse(&d, root);

    if (rc == 1) {
        ngx_http_influencers_identity_dir_error(&ld, "%s", d.error);
    }

    dir = (rc == 0) ? ngx_http_influencers_identity_directory_keep(cf,
                                                                   &d) : NULL;

    ngx_http_influencers_directory_free(&d);

    return dir;
}


/* in the order the parser sorted them, for bsearch() */

static ngx_http_influencers_directory_t *
ngx_http_influencers_identity_directory_keep(ngx_conf_t *cf,
    ngx_http_influencers_dir_t *d)
{
    size_t                              i;
    ngx_http_influencers_key_t         *k;
    ngx_http_influencers_project_t     *p;
    ngx_http_influencers_directory_t   *dir;

    dir = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_directory_t));
    if (dir == NULL) {
        return NULL;
    }

    if (ngx_array_init(&dir->keys, cf->pool, ngx_max(d->nkeys, 1),
                       sizeof(ngx_http_influencers_key_t))
        != NGX_OK
        || ngx_array_init(&dir->projects, cf->pool, ngx_max(d->nprojects, 1),
                          sizeof(ngx_http_influencers_project_t))
           != NGX_OK)
    {
        return NULL;
    }

    for (i = 0; i < d->nkeys; i++) {
        k = ngx_array_push(&dir->keys);
        if (k == NULL) {
            return NULL;
        }

        ngx_memcpy(k->digest, d->keys[i].digest,
                   NGX_HTTP_INFLUENCERS_SHA256_LEN);
        k->write = d->keys[i].write;

        if (ngx_http_influencers_identity_keep_org(cf, &k->org, d->keys[i].org,
                                                   d->keys[i].org_len)
            != NGX_OK)
        {
            return NULL;
        }
    }

    ngx_qsort(dir->keys.elts, dir->keys.nelts,
              sizeof(ngx_http_influencers_key_t),
              ngx_http_influencers_identity_key_cmp);

    for (i = 0; i < d->nprojects; i++) {
        p = ngx_array_push(&dir->projects);
        if (p == NULL) {
            return NULL;
        }

        ngx_memcpy(p->id, d->projects[i].id, NGX_HTTP_INFLUENCERS_UUID_BYTES);
        p->target_gender = d->projects[i].target_gender;

        if (ngx_http_influencers_identity_keep_org(cf, &p->org,
                                                   d->projects[i].org,
                                          d->projects[i].org_len)
            != NGX_OK)
        {
            return NULL;
        }
    }

    return dir;
}


static ngx_int_t
ngx_http_influencers_identity_keep_org(ngx_conf_t *cf, ngx_str_t *org,
    const char *data, size_t len)
{
    org->len = len;
    org->data = ngx_pnalloc(cf->pool, len);
    if (org->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(org->data, data, len);

    return NGX_OK;
}


static void ngx_cdecl
ngx_http_influencers_identity_dir_error(
    ngx_http_influencers_identity_loader_t *ld, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[NGX_MAX_CONF_ERRSTR];

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + NGX_MAX_CONF_ERRSTR, fmt, args);
    va_end(args);

    ngx_conf_log_error(NGX_LOG_EMERG, ld->cf, 0,
                       "influencers_directory \"%s\": %*s",
                       ld->file, p - buf, buf);
}


/*
 * API keys are found by their digest, each comparison in constant time: it
 * reads every byte, and the first difference decides without the loop
 * stopping there, so how long it takes tells nothing of where the digests
 * part.  The search itself takes as many steps for any key.
 *
 * The digests are compared as four 64-bit words in the host's byte order,
 * without a branch on their values (BearSSL's GT()): a fraction of the
 * steps of a byte at a time, on the path of every request, once per step
 * of the search.  That order is not the parser's, so the keys are sorted
 * by it again when they are kept.
 */

static int ngx_libc_cdecl
ngx_http_influencers_identity_key_cmp(const void *a, const void *b)
{
    uint64_t      x, y, z, lt, gt, less, greater, decided;
    const u_char *p, *q;
    ngx_uint_t    i;

    p = ((ngx_http_influencers_key_t *) a)->digest;
    q = ((ngx_http_influencers_key_t *) b)->digest;

    less = 0;
    greater = 0;
    decided = 0;

    for (i = 0; i < NGX_HTTP_INFLUENCERS_SHA256_LEN; i += 8) {
        ngx_memcpy(&x, p + i, 8);
        ngx_memcpy(&y, q + i, 8);

        /* 1 if x > y, and 1 if y > x, as unsigned numbers */

        z = y - x;
        gt = (z ^ ((x ^ y) & (x ^ z))) >> 63;
        z = x - y;
        lt = (z ^ ((y ^ x) & (y ^ z))) >> 63;

        greater |= gt & ~decided;
        less |= lt & ~decided;
        decided |= gt | lt;
    }

    return (int) greater - (int) less;
}


static int ngx_libc_cdecl
ngx_http_influencers_identity_project_cmp(const void *a, const void *b)
{
    return ngx_memcmp(((ngx_http_influencers_project_t *) a)->id,
                      ((ngx_http_influencers_project_t *) b)->id,
                      NGX_HTTP_INFLUENCERS_UUID_BYTES);
}


ngx_int_t
ngx_http_influencers_identity_authenticate(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer)
{
    size_t                       len;
    ngx_str_t                    org, scopes;
    const u_char                *key;
    ngx_table_elt_t             *h;
    ngx_http_influencers_key_t  *k, probe;

    if (ilcf->directory) {
        h = r->headers_in.authorization;

        if (h == NULL
            || ngx_http_influencers_validate_parse_bearer(h->value.data,
                                                          h->value.len,
                                                 &key, &len)
               != 0)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "influencers identity: %s",
                           h ? "the Authorization header is not Bearer"
                             : "no Authorization header");
            *answer = NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
            return NGX_DECLINED;
        }

        if (ngx_http_influencers_ids_sha256(key, len, probe.digest) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "influencers: SHA-256 failed");
            *answer = NGX_HTTP_INFLUENCERS_INTERNAL;
            return NGX_DECLINED;
        }

        k = bsearch(&probe, ilcf->directory->keys.elts,
                    ilcf->directory->keys.nelts,
                    sizeof(ngx_http_influencers_key_t),
                    ngx_http_influencers_identity_key_cmp);

        if (k == NULL) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "influencers identity: the key is not in the "
                           "directory");
            *answer = NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
            return NGX_DECLINED;
        }

        ctx->job.org = k->org;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers identity: from the directory, %s",
                       k->write ? "the write scope held"
                                : "the write scope missing");

        if (!k->write) {
            *answer = NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE;
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (ngx_http_complex_value(r, ilcf->org, &org) != NGX_OK) {
        *answer = NGX_HTTP_INFLUENCERS_INTERNAL;
        return NGX_DECLINED;
    }

    if (org.len == 0) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers identity: \"influencers_org\" is empty");
        *answer = NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
        return NGX_DECLINED;
    }

    if (ngx_http_influencers_directory_valid_org(org.data, org.len) != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: the org from \"influencers_org\" is not "
                      "1-64 visible ASCII characters");
        *answer = NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
        return NGX_DECLINED;
    }

    ctx->job.org = org;

    if (ngx_http_complex_value(r, ilcf->scopes, &scopes) != NGX_OK) {
        *answer = NGX_HTTP_INFLUENCERS_INTERNAL;
        return NGX_DECLINED;
    }

    if (!ngx_http_influencers_validate_has_scope(scopes.data, scopes.len,
                                      NGX_HTTP_INFLUENCERS_SCOPE,
                                      sizeof(NGX_HTTP_INFLUENCERS_SCOPE) - 1))
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers identity: from variables, "
                       "\"influencers_scopes\" lacks the write scope");
        *answer = NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE;
        return NGX_DECLINED;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers identity: from variables, the write scope "
                   "held");

    return NGX_OK;
}


ngx_int_t
ngx_http_influencers_identity_authorize_project(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer)
{
    ngx_str_t                        target;
    ngx_http_influencers_project_t  *p, probe;

    if (ilcf->directory) {
        ngx_memcpy(probe.id, ctx->job.project, NGX_HTTP_INFLUENCERS_UUID_BYTES);

        p = bsearch(&probe, ilcf->directory->projects.elts,
                    ilcf->directory->projects.nelts,
                    sizeof(ngx_http_influencers_project_t),
                    ngx_http_influencers_identity_project_cmp);

        /* one answer for "another org's" and "no such project" */

        if (p == NULL
            || p->org.len != ctx->job.org.len
            || ngx_memcmp(p->org.data, ctx->job.org.data, p->org.len) != 0)
        {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "influencers identity: the project is not in "
                           "this org");
            *answer = NGX_HTTP_INFLUENCERS_NOT_FOUND;
            return NGX_DECLINED;
        }

        ctx->target_gender = p->target_gender;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "influencers identity: the project is in the org, "
                       "target gender %ui", ctx->target_gender);

        return NGX_OK;
    }

    /* with trusted variables, membership is the backend's to judge */

    ctx->target_gender = NGX_HTTP_INFLUENCERS_TARGET_ANY;

    if (ilcf->target_gender) {
        if (ngx_http_complex_value(r, ilcf->target_gender, &target) != NGX_OK)
        {
            *answer = NGX_HTTP_INFLUENCERS_INTERNAL;
            return NGX_DECLINED;
        }

        ctx->target_gender = ngx_http_influencers_validate_enum_find(
                                          ngx_http_influencers_targets,
                                          target.data, target.len);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "influencers identity: the project is the backend's to "
                   "judge, target gender %ui", ctx->target_gender);

    return NGX_OK;
}
