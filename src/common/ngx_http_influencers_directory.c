
/*
 * Copyright (C) The influencers module authors.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_influencers_directory.h"


const ngx_http_influencers_enum_t  ngx_http_influencers_targets[] = {
    { "", 0 },
    { "male", 4 },
    { "female", 6 },
    { "non_binary", 10 },
    { "any", 3 },
    { NULL, 0 }
};


static int ngx_http_influencers_directory_keys(ngx_http_influencers_dir_t *d,
    json_t *keys);
static int ngx_http_influencers_directory_projects(
    ngx_http_influencers_dir_t *d, json_t *projects);
static int ngx_http_influencers_directory_fields(ngx_http_influencers_dir_t *d,
    json_t *obj, const char *what, size_t i, const char **allowed);
static int ngx_http_influencers_directory_org(ngx_http_influencers_dir_t *d,
    json_t *obj, const char *what, size_t i, const char **org,
    size_t *org_len);
static int ngx_http_influencers_directory_error(ngx_http_influencers_dir_t *d,
    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__ ((format (printf, 2, 3)))
#endif
    ;
static int ngx_http_influencers_directory_key_cmp(const void *a, const void *b);
static int ngx_http_influencers_directory_project_cmp(const void *a,
    const void *b);


/*
 * The checks run in the order the module has always run them, so that a
 * file with several mistakes is reported the same way: the top level, then
 * each key, the keys' duplicates, each project, the projects' duplicates.
 */

int
ngx_http_influencers_directory_parse(ngx_http_influencers_dir_t *d,
                                     json_t *root)
{
    int          rc;
    json_t      *keys, *projects;

    static const char  *fields[] = { "keys", "projects", NULL };

    memset(d, 0, sizeof(ngx_http_influencers_dir_t));

    d->root = root;

    if (!json_is_object(root)) {
        return ngx_http_influencers_directory_error(d,
                                            "the top level is not an object");
    }

    rc = ngx_http_influencers_directory_fields(d, root, NULL, 0, fields);
    if (rc != 0) {
        return rc;
    }

    keys = json_object_get(root, "keys");
    projects = json_object_get(root, "projects");

    if (!json_is_array(keys)
        || (projects != NULL && !json_is_array(projects)))
    {
        return ngx_http_influencers_directory_error(d,
                           "\"keys\" must be an array, and \"projects\" too");
    }

    rc = ngx_http_influencers_directory_keys(d, keys);
    if (rc != 0) {
        return rc;
    }

    return ngx_http_influencers_directory_projects(d, projects);
}


void
ngx_http_influencers_directory_free(ngx_http_influencers_dir_t *d)
{
    free(d->keys);
    free(d->projects);
    json_decref(d->root);

    d->keys = NULL;
    d->projects = NULL;
    d->root = NULL;
}


static int
ngx_http_influencers_directory_keys(ngx_http_influencers_dir_t *d, json_t *keys)
{
    int                              rc, hi, lo;
    size_t                           i, n;
    json_t                          *entry, *v, *scopes, *scope;
    const char                      *hex;
    ngx_http_influencers_dir_key_t  *k;

    static const char  *fields[] = { "sha256", "org", "scopes", "label",
                                     NULL };

    /* one more than none, so that malloc() never answers NULL for 0 */

    d->keys = malloc((json_array_size(keys) + 1)
                     * sizeof(ngx_http_influencers_dir_key_t));
    if (d->keys == NULL) {
        return -1;
    }

    json_array_foreach(keys, i, entry) {

        if (!json_is_object(entry)) {
            return ngx_http_influencers_directory_error(d,
                                        "keys[%zu] is not an object", i);
        }

        rc = ngx_http_influencers_directory_fields(d, entry, "keys", i, fields);
        if (rc != 0) {
            return rc;
        }

        k = &d->keys[d->nkeys++];
        k->index = i;

        v = json_object_get(entry, "sha256");
        hex = json_string_value(v);

        if (hex == NULL || json_string_length(v) != 64) {
            goto bad_digest;
        }

        for (n = 0; n < 32; n++) {
            hi = ngx_http_influencers_validate_hex_digit((u_char) hex[2 * n]);
            lo = ngx_http_influencers_validate_hex_digit(
                (u_char) hex[2 * n + 1]);

            if (hi < 0 || lo < 0) {
                goto bad_digest;
            }

            k->digest[n] = (u_char) (hi << 4 | lo);
        }

        rc = ngx_http_influencers_directory_org(d, entry, "keys", i, &k->org,
                                                &k->org_len);
        if (rc != 0) {
            return rc;
        }

        scopes = json_object_get(entry, "scopes");

        if (!json_is_array(scopes)) {
            return ngx_http_influencers_directory_error(d,
                          "keys[%zu]: \"scopes\" must be an array of strings",
                          i);
        }

        k->write = 0;

        json_array_foreach(scopes, n, scope) {
            if (!json_is_string(scope)) {
                return ngx_http_influencers_directory_error(d,
                          "keys[%zu]: \"scopes\" must be an array of strings",
                          i);
            }

            if (strcmp(json_string_value(scope), NGX_HTTP_INFLUENCERS_SCOPE)
                == 0)
            {
                k->write = 1;
            }
        }

        v = json_object_get(entry, "label");

        if (v != NULL && !json_is_string(v)) {
            return ngx_http_influencers_directory_error(d,
                                "keys[%zu]: \"label\" must be a string", i);
        }
    }

    k = d->keys;
    n = d->nkeys;

    qsort(k, n, sizeof(ngx_http_influencers_dir_key_t),
          ngx_http_influencers_directory_key_cmp);

    for (i = 1; i < n; i++) {
        if (memcmp(k[i].digest, k[i - 1].digest, 32) == 0) {
            return ngx_http_influencers_directory_error(d,
                          "keys[%zu]: duplicate key (same \"sha256\" as "
                          "keys[%zu])",
                          k[i].index > k[i - 1].index
                          ? k[i].index : k[i - 1].index,
                          k[i].index < k[i - 1].index
                          ? k[i].index : k[i - 1].index);
        }
    }

    return 0;

bad_digest:

    return ngx_http_influencers_directory_error(d,
                                                "keys[%zu]: \"sha256\" must be "
                                          "64 hexadecimal digits", i);
}


static int
ngx_http_influencers_directory_projects(ngx_http_influencers_dir_t *d,
    json_t *projects)
{
    int                                  rc;
    size_t                               i, n;
    json_t                              *entry, *v;
    u_char                               uuid[NGX_HTTP_INFLUENCERS_UUID_LEN];
    ngx_http_influencers_dir_project_t  *p;

    static const char  *fields[] = { "id", "org", "targetGender", NULL };

    d->projects = malloc((json_array_size(projects) + 1)
                         * sizeof(ngx_http_influencers_dir_project_t));
    if (d->projects == NULL) {
        return -1;
    }

    json_array_foreach(projects, i, entry) {

        if (!json_is_object(entry)) {
            return ngx_http_influencers_directory_error(d,
                                    "projects[%zu] is not an object", i);
        }

        rc = ngx_http_influencers_directory_fields(d, entry, "projects", i,
                                                   fields);
        if (rc != 0) {
            return rc;
        }

        p = &d->projects[d->nprojects++];
        p->index = i;

        v = json_object_get(entry, "id");

        if (!json_is_string(v)
            || ngx_http_influencers_validate_parse_uuid(
                   (const u_char *) json_string_value(v),
                   json_string_length(v), p->id)
               != 0)
        {
            return ngx_http_influencers_directory_error(d,
                                   "projects[%zu]: \"id\" must be a UUID", i);
        }

        rc = ngx_http_influencers_directory_org(d, entry, "projects", i,
                                                &p->org,
                                          &p->org_len);
        if (rc != 0) {
            return rc;
        }

        v = json_object_get(entry, "targetGender");
        p->target_gender = NGX_HTTP_INFLUENCERS_TARGET_ANY;

        if (v != NULL) {
            p->target_gender = json_is_string(v)
                ? ngx_http_influencers_validate_enum_find(
                    ngx_http_influencers_targets,
                    (const u_char *) json_string_value(v),
                    json_string_length(v))
                : 0;

            if (p->target_gender == 0) {
                return ngx_http_influencers_directory_error(d,
                          "projects[%zu]: \"targetGender\" must be one of "
                          "\"female\", \"male\", \"non_binary\", \"any\"", i);
            }
        }
    }

    p = d->projects;
    n = d->nprojects;

    qsort(p, n, sizeof(ngx_http_influencers_dir_project_t),
          ngx_http_influencers_directory_project_cmp);

    for (i = 1; i < n; i++) {
        if (memcmp(p[i].id, p[i - 1].id, NGX_HTTP_INFLUENCERS_UUID_BYTES)
            == 0)
        {
            ngx_http_influencers_validate_format_uuid(p[i].id, uuid);

            return ngx_http_influencers_directory_error(d,
                          "projects[%zu]: duplicate project \"%.*s\" (also "
                          "projects[%zu])",
                          p[i].index > p[i - 1].index
                          ? p[i].index : p[i - 1].index,
                          (int) NGX_HTTP_INFLUENCERS_UUID_LEN, uuid,
                          p[i].index < p[i - 1].index
                          ? p[i].index : p[i - 1].index);
        }
    }

    return 0;
}


static int
ngx_http_influencers_directory_fields(ngx_http_influencers_dir_t *d,
                                      json_t *obj,
    const char *what, size_t i, const char **allowed)
{
    json_t       *v;
    const char   *key, **a;

    json_object_foreach(obj, key, v) {
        for (a = allowed; *a; a++) {
            if (strcmp(key, *a) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            if (what) {
                return ngx_http_influencers_directory_error(d,
                                      "%s[%zu]: unknown field \"%s\"",
                                      what, i, key);
            }

            return ngx_http_influencers_directory_error(d,
                                                        "unknown field \"%s\"",
                                                  key);
        }
    }

    return 0;
}


static int
ngx_http_influencers_directory_org(ngx_http_influencers_dir_t *d, json_t *obj,
    const char *what, size_t i, const char **org, size_t *org_len)
{
    json_t  *v;

    v = json_object_get(obj, "org");

    if (!json_is_string(v)
        || ngx_http_influencers_directory_valid_org(
               (const u_char *) json_string_value(v), json_string_length(v))
           != 0)
    {
        return ngx_http_influencers_directory_error(d,
                              "%s[%zu]: \"org\" must be 1-64 visible ASCII "
                              "characters", what, i);
    }

    *org = json_string_value(v);
    *org_len = json_string_length(v);

    return 0;
}


int
ngx_http_influencers_directory_valid_org(const u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_INFLUENCERS_ORG_MAX) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\') {
            return -1;
        }
    }

    return 0;
}


/*
 * A message as long as nginx's own limit lets it be: the conf log cuts
 * what is longer anyway.  Returns 1, the invalid file's answer.
 */

static int
ngx_http_influencers_directory_error(ngx_http_influencers_dir_t *d,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    (void) vsnprintf(d->error, sizeof(d->error), fmt, args);
    va_end(args);

    return 1;
}


static int
ngx_http_influencers_directory_key_cmp(const void *a, const void *b)
{
    return memcmp(((const ngx_http_influencers_dir_key_t *) a)->digest,
                  ((const ngx_http_influencers_dir_key_t *) b)->digest, 32);
}


static int
ngx_http_influencers_directory_project_cmp(const void *a, const void *b)
{
    return memcmp(((const ngx_http_influencers_dir_project_t *) a)->id,
                  ((const ngx_http_influencers_dir_project_t *) b)->id,
                  NGX_HTTP_INFLUENCERS_UUID_BYTES);
}
