
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_identity.h"
#include "ngx_http_influencers_reply.h"


#define NGX_HTTP_INFLUENCERS_SCOPE  "influencers:write"


typedef struct {
    u_char                 digest[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    ngx_str_t              org;
    ngx_uint_t             write;
    ngx_uint_t             index;
} ngx_http_influencers_key_t;


typedef struct {
    u_char                 id[16];
    ngx_str_t              org;
    ngx_uint_t             target_gender;
    ngx_uint_t             index;
} ngx_http_influencers_project_t;


struct ngx_http_influencers_directory_s {
    ngx_array_t            keys;        /* sorted by digest */
    ngx_array_t            projects;    /* sorted by id */
};


typedef struct {
    ngx_conf_t            *cf;
    u_char                *file;
    ngx_http_influencers_directory_t  *dir;
} ngx_http_influencers_loader_t;


static const ngx_http_influencers_enum_t  ngx_http_influencers_targets[] = {
    { "", 0 },
    { "male", 4 },
    { "female", 6 },
    { "non_binary", 10 },
    { "any", 3 },
    { NULL, 0 }
};


static void ngx_cdecl ngx_http_influencers_dir_error(
    ngx_http_influencers_loader_t *ld, const char *fmt, ...);
static ngx_int_t ngx_http_influencers_check_fields(
    ngx_http_influencers_loader_t *ld, json_t *obj, const char *what,
    ngx_uint_t i, const char **allowed);
static ngx_int_t ngx_http_influencers_get_org(
    ngx_http_influencers_loader_t *ld, json_t *obj, const char *what,
    ngx_uint_t i, ngx_str_t *org);
static ngx_int_t ngx_http_influencers_load_keys(
    ngx_http_influencers_loader_t *ld, json_t *keys);
static ngx_int_t ngx_http_influencers_load_projects(
    ngx_http_influencers_loader_t *ld, json_t *projects);
static ngx_int_t ngx_http_influencers_valid_org(u_char *p, size_t len);
static int ngx_libc_cdecl ngx_http_influencers_key_cmp(const void *a,
    const void *b);
static int ngx_libc_cdecl ngx_http_influencers_project_cmp(const void *a,
    const void *b);


ngx_http_influencers_directory_t *
ngx_http_influencers_directory_load(ngx_conf_t *cf, ngx_str_t *file)
{
    json_t                             *root, *keys, *projects;
    ngx_str_t                           path;
    json_error_t                        err;
    ngx_http_influencers_loader_t       ld;
    ngx_http_influencers_directory_t   *dir;

    static const char  *fields[] = { "keys", "projects", NULL };

    path = *file;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NULL;
    }

    dir = ngx_pcalloc(cf->pool, sizeof(ngx_http_influencers_directory_t));
    if (dir == NULL) {
        return NULL;
    }

    ld.cf = cf;
    ld.file = path.data;    /* ngx_conf_full_name() NUL-terminates */
    ld.dir = dir;

    root = json_load_file((char *) path.data, JSON_REJECT_DUPLICATES, &err);

    if (root == NULL) {
        if (json_error_code(&err) == json_error_cannot_open_file) {
            ngx_http_influencers_dir_error(&ld, "cannot open the file (%s)",
                                           err.text);
        } else {
            ngx_http_influencers_dir_error(&ld,
                                  "invalid JSON at line %d, column %d: %s",
                                  err.line, err.column, err.text);
        }

        return NULL;
    }

    if (!json_is_object(root)) {
        ngx_http_influencers_dir_error(&ld, "the top level is not an object");
        goto failed;
    }

    if (ngx_http_influencers_check_fields(&ld, root, NULL, 0, fields)
        != NGX_OK)
    {
        goto failed;
    }

    keys = json_object_get(root, "keys");
    projects = json_object_get(root, "projects");

    if (!json_is_array(keys)
        || (projects != NULL && !json_is_array(projects)))
    {
        ngx_http_influencers_dir_error(&ld,
                       "\"keys\" must be an array, and \"projects\" too");
        goto failed;
    }

    if (ngx_http_influencers_load_keys(&ld, keys) != NGX_OK
        || ngx_http_influencers_load_projects(&ld, projects) != NGX_OK)
    {
        goto failed;
    }

    json_decref(root);

    return dir;

failed:

    json_decref(root);

    return NULL;
}


static ngx_int_t
ngx_http_influencers_load_keys(ngx_http_influencers_loader_t *ld,
    json_t *keys)
{
    size_t                       i, n;
    json_t                      *entry, *v, *scopes, *scope;
    const char                  *hex;
    ngx_http_influencers_key_t  *k, *all;

    static const char  *fields[] = { "sha256", "org", "scopes", "label",
                                     NULL };

    if (ngx_array_init(&ld->dir->keys, ld->cf->pool,
                       ngx_max(json_array_size(keys), 1),
                       sizeof(ngx_http_influencers_key_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    json_array_foreach(keys, i, entry) {

        if (!json_is_object(entry)) {
            ngx_http_influencers_dir_error(ld, "keys[%uz] is not an object",
                                           i);
            return NGX_ERROR;
        }

        if (ngx_http_influencers_check_fields(ld, entry, "keys", i, fields)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        k = ngx_array_push(&ld->dir->keys);
        if (k == NULL) {
            return NGX_ERROR;
        }

        k->index = i;

        v = json_object_get(entry, "sha256");
        hex = json_string_value(v);

        if (hex == NULL || json_string_length(v) != 64) {
            goto bad_digest;
        }

        for (n = 0; n < 32; n++) {
            ngx_int_t  hi, lo;

            hi = ngx_hextoi((u_char *) hex + 2 * n, 1);
            lo = ngx_hextoi((u_char *) hex + 2 * n + 1, 1);

            if (hi == NGX_ERROR || lo == NGX_ERROR) {
                goto bad_digest;
            }

            k->digest[n] = (u_char) (hi << 4 | lo);
        }

        if (ngx_http_influencers_get_org(ld, entry, "keys", i, &k->org)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        scopes = json_object_get(entry, "scopes");

        if (!json_is_array(scopes)) {
            ngx_http_influencers_dir_error(ld,
                          "keys[%uz]: \"scopes\" must be an array of strings",
                          i);
            return NGX_ERROR;
        }

        k->write = 0;

        json_array_foreach(scopes, n, scope) {
            if (!json_is_string(scope)) {
                ngx_http_influencers_dir_error(ld,
                          "keys[%uz]: \"scopes\" must be an array of strings",
                          i);
                return NGX_ERROR;
            }

            if (ngx_strcmp(json_string_value(scope),
                           NGX_HTTP_INFLUENCERS_SCOPE) == 0)
            {
                k->write = 1;
            }
        }

        v = json_object_get(entry, "label");

        if (v != NULL && !json_is_string(v)) {
            ngx_http_influencers_dir_error(ld,
                                "keys[%uz]: \"label\" must be a string", i);
            return NGX_ERROR;
        }
    }

    all = ld->dir->keys.elts;
    n = ld->dir->keys.nelts;

    ngx_qsort(all, n, sizeof(ngx_http_influencers_key_t),
              ngx_http_influencers_key_cmp);

    for (i = 1; i < n; i++) {
        if (ngx_memcmp(all[i].digest, all[i - 1].digest, 32) == 0) {
            ngx_http_influencers_dir_error(ld,
                          "keys[%ui]: duplicate key (same \"sha256\" as "
                          "keys[%ui])",
                          ngx_max(all[i].index, all[i - 1].index),
                          ngx_min(all[i].index, all[i - 1].index));
            return NGX_ERROR;
        }
    }

    return NGX_OK;

bad_digest:

    ngx_http_influencers_dir_error(ld, "keys[%uz]: \"sha256\" must be 64 "
                                   "hexadecimal digits", i);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_influencers_load_projects(ngx_http_influencers_loader_t *ld,
    json_t *projects)
{
    size_t                           i, n;
    json_t                          *entry, *v;
    u_char                           uuid[NGX_HTTP_INFLUENCERS_UUID_LEN];
    ngx_http_influencers_project_t  *p, *all;

    static const char  *fields[] = { "id", "org", "targetGender", NULL };

    if (ngx_array_init(&ld->dir->projects, ld->cf->pool,
                       ngx_max(json_array_size(projects), 1),
                       sizeof(ngx_http_influencers_project_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    json_array_foreach(projects, i, entry) {

        if (!json_is_object(entry)) {
            ngx_http_influencers_dir_error(ld,
                                    "projects[%uz] is not an object", i);
            return NGX_ERROR;
        }

        if (ngx_http_influencers_check_fields(ld, entry, "projects", i,
                                              fields)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = ngx_array_push(&ld->dir->projects);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p->index = i;

        v = json_object_get(entry, "id");

        if (!json_is_string(v)
            || ngx_http_influencers_parse_uuid(
                   (const u_char *) json_string_value(v),
                   json_string_length(v), p->id)
               != 0)
        {
            ngx_http_influencers_dir_error(ld,
                                   "projects[%uz]: \"id\" must be a UUID", i);
            return NGX_ERROR;
        }

        if (ngx_http_influencers_get_org(ld, entry, "projects", i, &p->org)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        v = json_object_get(entry, "targetGender");
        p->target_gender = NGX_HTTP_INFLUENCERS_TARGET_ANY;

        if (v != NULL) {
            p->target_gender = json_is_string(v)
                ? ngx_http_influencers_enum_find(ngx_http_influencers_targets,
                                         (const u_char *) json_string_value(v),
                                         json_string_length(v))
                : 0;

            if (p->target_gender == 0) {
                ngx_http_influencers_dir_error(ld,
                          "projects[%uz]: \"targetGender\" must be one of "
                          "\"female\", \"male\", \"non_binary\", \"any\"", i);
                return NGX_ERROR;
            }
        }
    }

    all = ld->dir->projects.elts;
    n = ld->dir->projects.nelts;

    ngx_qsort(all, n, sizeof(ngx_http_influencers_project_t),
              ngx_http_influencers_project_cmp);

    for (i = 1; i < n; i++) {
        if (ngx_memcmp(all[i].id, all[i - 1].id, 16) == 0) {
            ngx_http_influencers_format_uuid(all[i].id, uuid);
            ngx_http_influencers_dir_error(ld,
                          "projects[%ui]: duplicate project \"%*s\" (also "
                          "projects[%ui])",
                          ngx_max(all[i].index, all[i - 1].index),
                          (size_t) NGX_HTTP_INFLUENCERS_UUID_LEN, uuid,
                          ngx_min(all[i].index, all[i - 1].index));
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_check_fields(ngx_http_influencers_loader_t *ld,
    json_t *obj, const char *what, ngx_uint_t i, const char **allowed)
{
    json_t       *v;
    const char   *key, **a;

    json_object_foreach(obj, key, v) {
        for (a = allowed; *a; a++) {
            if (ngx_strcmp(key, *a) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            if (what) {
                ngx_http_influencers_dir_error(ld,
                                      "%s[%ui]: unknown field \"%s\"",
                                      what, i, key);
            } else {
                ngx_http_influencers_dir_error(ld, "unknown field \"%s\"",
                                               key);
            }

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_get_org(ngx_http_influencers_loader_t *ld, json_t *obj,
    const char *what, ngx_uint_t i, ngx_str_t *org)
{
    json_t  *v;

    v = json_object_get(obj, "org");

    if (!json_is_string(v)
        || ngx_http_influencers_valid_org((u_char *) json_string_value(v),
                                          json_string_length(v))
           != NGX_OK)
    {
        ngx_http_influencers_dir_error(ld,
                              "%s[%ui]: \"org\" must be 1-64 visible ASCII "
                              "characters", what, i);
        return NGX_ERROR;
    }

    org->len = json_string_length(v);
    org->data = ngx_pnalloc(ld->cf->pool, org->len);
    if (org->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(org->data, json_string_value(v), org->len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_influencers_valid_org(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_INFLUENCERS_ORG_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void ngx_cdecl
ngx_http_influencers_dir_error(ngx_http_influencers_loader_t *ld,
    const char *fmt, ...)
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


static int ngx_libc_cdecl
ngx_http_influencers_key_cmp(const void *a, const void *b)
{
    return ngx_memcmp(((ngx_http_influencers_key_t *) a)->digest,
                      ((ngx_http_influencers_key_t *) b)->digest, 32);
}


static int ngx_libc_cdecl
ngx_http_influencers_project_cmp(const void *a, const void *b)
{
    return ngx_memcmp(((ngx_http_influencers_project_t *) a)->id,
                      ((ngx_http_influencers_project_t *) b)->id, 16);
}


ngx_uint_t
ngx_http_influencers_authenticate(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx)
{
    size_t                       len;
    ngx_str_t                    org, scopes;
    const u_char                *key;
    ngx_table_elt_t             *h;
    ngx_http_influencers_key_t  *k, probe;

    if (ilcf->directory) {
        h = r->headers_in.authorization;

        if (h == NULL
            || ngx_http_influencers_parse_bearer(h->value.data, h->value.len,
                                                 &key, &len)
               != 0)
        {
            return NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
        }

        if (ngx_http_influencers_sha256(key, len, probe.digest) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "influencers: SHA-256 failed");
            return NGX_HTTP_INFLUENCERS_INTERNAL;
        }

        k = bsearch(&probe, ilcf->directory->keys.elts,
                    ilcf->directory->keys.nelts,
                    sizeof(ngx_http_influencers_key_t),
                    ngx_http_influencers_key_cmp);

        if (k == NULL) {
            return NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
        }

        ctx->job.org = k->org;

        return k->write ? NGX_HTTP_INFLUENCERS_ACCEPTED
                        : NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE;
    }

    if (ngx_http_complex_value(r, ilcf->org, &org) != NGX_OK) {
        return NGX_HTTP_INFLUENCERS_INTERNAL;
    }

    if (org.len == 0) {
        return NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
    }

    if (ngx_http_influencers_valid_org(org.data, org.len) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "influencers: the org from \"influencers_org\" is not "
                      "1-64 visible ASCII characters");
        return NGX_HTTP_INFLUENCERS_UNAUTHENTICATED;
    }

    ctx->job.org = org;

    if (ngx_http_complex_value(r, ilcf->scopes, &scopes) != NGX_OK) {
        return NGX_HTTP_INFLUENCERS_INTERNAL;
    }

    if (!ngx_http_influencers_has_scope(scopes.data, scopes.len,
                                        NGX_HTTP_INFLUENCERS_SCOPE,
                                        sizeof(NGX_HTTP_INFLUENCERS_SCOPE) - 1))
    {
        return NGX_HTTP_INFLUENCERS_FORBIDDEN_SCOPE;
    }

    return NGX_HTTP_INFLUENCERS_ACCEPTED;
}


ngx_uint_t
ngx_http_influencers_authorize_project(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx)
{
    ngx_str_t                        target;
    ngx_http_influencers_project_t  *p, probe;

    if (ilcf->directory) {
        ngx_memcpy(probe.id, ctx->job.project, 16);

        p = bsearch(&probe, ilcf->directory->projects.elts,
                    ilcf->directory->projects.nelts,
                    sizeof(ngx_http_influencers_project_t),
                    ngx_http_influencers_project_cmp);

        /* one answer for "another org's" and "no such project" */

        if (p == NULL
            || p->org.len != ctx->job.org.len
            || ngx_memcmp(p->org.data, ctx->job.org.data, p->org.len) != 0)
        {
            return NGX_HTTP_INFLUENCERS_NOT_FOUND;
        }

        ctx->target_gender = p->target_gender;

        return NGX_HTTP_INFLUENCERS_ACCEPTED;
    }

    /* with trusted variables, membership is the backend's to judge */

    ctx->target_gender = NGX_HTTP_INFLUENCERS_TARGET_ANY;

    if (ilcf->target_gender) {
        if (ngx_http_complex_value(r, ilcf->target_gender, &target) != NGX_OK)
        {
            return NGX_HTTP_INFLUENCERS_INTERNAL;
        }

        ctx->target_gender = ngx_http_influencers_enum_find(
                                          ngx_http_influencers_targets,
                                          target.data, target.len);
    }

    return NGX_HTTP_INFLUENCERS_ACCEPTED;
}
