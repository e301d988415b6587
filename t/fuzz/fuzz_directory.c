
/*
 * Copyright (C) The influencers module authors.
 *
 * libFuzzer harness: the directory file's checks
 * (src/common/ngx_http_influencers_directory.c), fed what jansson makes of the
 * input with the flags the module reads the file with.  Besides what ASan
 * and UBSan catch (leaks included):
 *
 *   - a file is accepted exactly when an independent check written from
 *     the README's description of the file accepts it;
 *   - a refusal says why, in a message of the known kinds;
 *   - what is accepted is every key and project of the file, sorted, with
 *     no two alike, each digest, id, org, scope and targetGender as the
 *     file says.
 *
 * A broken property aborts, which libFuzzer reports as a crash.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_influencers_directory.h"


#define fuzz_assert(cond, what)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_directory: %s (%s:%d)\n", what, __FILE__,    \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)


/* only the allowed fields */

static int
fuzz_fields(json_t *obj, const char **allowed)
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
            return 0;
        }
    }

    return 1;
}


static int
fuzz_org(json_t *v)
{
    size_t         i, len;
    const u_char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = (const u_char *) json_string_value(v);
    len = json_string_length(v);

    if (len < 1 || len > 64) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\') {
            return 0;
        }
    }

    return 1;
}


/* 0-15, or -1 */

static int
fuzz_hex(char c)
{
    const char  *hex = "0123456789abcdef0123456789ABCDEF", *p;

    if (c == '\0' || (p = strchr(hex, c)) == NULL) {
        return -1;
    }

    return (int) ((p - hex) % 16);
}


/* a digest of 64 hex digits, or an id of 8-4-4-4-12 of them, in out */

static int
fuzz_bytes(json_t *v, int uuid, u_char *out)
{
    int          hi, lo;
    size_t       i, n, len;
    char         digits[64];
    const char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len != (uuid ? 36 : 64)) {
        return 0;
    }

    for (i = 0, n = 0; i < len; i++) {
        if (uuid && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (s[i] != '-') {
                return 0;
            }

            continue;
        }

        digits[n++] = s[i];
    }

    for (i = 0; i < n / 2; i++) {
        hi = fuzz_hex(digits[2 * i]);
        lo = fuzz_hex(digits[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return 0;
        }

        out[i] = (u_char) (hi << 4 | lo);
    }

    return 1;
}


static int
fuzz_target(json_t *v)
{
    const char  *s;

    if (v == NULL) {
        return NGX_HTTP_INFLUENCERS_TARGET_ANY;
    }

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);

    return strcmp(s, "male") == 0 ? 1 : strcmp(s, "female") == 0 ? 2
           : strcmp(s, "non_binary") == 0 ? 3 : strcmp(s, "any") == 0 ? 4 : 0;
}


static int
fuzz_write_scope(json_t *scopes)
{
    size_t   i;
    json_t  *s;

    json_array_foreach(scopes, i, s) {
        if (strcmp(json_string_value(s), "influencers:write") == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * The reference: the file as the README describes it.  Checks too what
 * the parser kept when it accepted the file.
 */

static int
fuzz_reference(json_t *root, ngx_http_influencers_dir_t *d, int accepted)
{
    size_t       i, j, n;
    u_char       digest[32], id[16], other[32];
    json_t      *keys, *projects, *e, *s;

    static const char  *top[] = { "keys", "projects", NULL };
    static const char  *key_fields[] = { "sha256", "org", "scopes", "label",
                                         NULL };
    static const char  *project_fields[] = { "id", "org", "targetGender",
                                             NULL };

    if (!json_is_object(root) || !fuzz_fields(root, top)) {
        return 0;
    }

    keys = json_object_get(root, "keys");
    projects = json_object_get(root, "projects");

    if (!json_is_array(keys) || (projects && !json_is_array(projects))) {
        return 0;
    }

    json_array_foreach(keys, i, e) {
        if (!json_is_object(e) || !fuzz_fields(e, key_fields)
            || !fuzz_bytes(json_object_get(e, "sha256"), 0, digest)
            || !fuzz_org(json_object_get(e, "org"))
            || !json_is_array(json_object_get(e, "scopes"))
            || (json_object_get(e, "label")
                && !json_is_string(json_object_get(e, "label"))))
        {
            return 0;
        }

        json_array_foreach(json_object_get(e, "scopes"), j, s) {
            if (!json_is_string(s)) {
                return 0;
            }
        }

        for (j = 0; j < i; j++) {
            (void) fuzz_bytes(json_object_get(json_array_get(keys, j),
                                              "sha256"), 0, other);

            if (memcmp(digest, other, 32) == 0) {
                return 0;
            }
        }
    }

    json_array_foreach(projects, i, e) {
        if (!json_is_object(e) || !fuzz_fields(e, project_fields)
            || !fuzz_bytes(json_object_get(e, "id"), 1, id)
            || !fuzz_org(json_object_get(e, "org"))
            || fuzz_target(json_object_get(e, "targetGender")) == 0)
        {
            return 0;
        }

        for (j = 0; j < i; j++) {
            (void) fuzz_bytes(json_object_get(json_array_get(projects, j),
                                              "id"), 1, other);

            if (memcmp(id, other, 16) == 0) {
                return 0;
            }
        }
    }

    if (!accepted) {
        return 1;
    }

    /* what the parser kept: all of it, sorted, as the file says */

    fuzz_assert(d->nkeys == json_array_size(keys)
                && d->nprojects == json_array_size(projects),
                "entries lost");

    for (n = 0; n < d->nkeys; n++) {
        e = json_array_get(keys, d->keys[n].index);
        fuzz_assert(e != NULL, "a key from nowhere");

        (void) fuzz_bytes(json_object_get(e, "sha256"), 0, digest);
        s = json_object_get(e, "org");

        fuzz_assert(memcmp(digest, d->keys[n].digest, 32) == 0,
                    "a digest read wrong");
        fuzz_assert(d->keys[n].org == json_string_value(s)
                    && d->keys[n].org_len == json_string_length(s),
                    "a key's org read wrong");
        fuzz_assert(d->keys[n].write
                    == (unsigned) fuzz_write_scope(json_object_get(e,
                                                                   "scopes")),
                    "a key's scope read wrong");
        fuzz_assert(n == 0 || memcmp(d->keys[n - 1].digest, d->keys[n].digest,
                                     32) < 0,
                    "keys not sorted");
    }

    for (n = 0; n < d->nprojects; n++) {
        e = json_array_get(projects, d->projects[n].index);
        fuzz_assert(e != NULL, "a project from nowhere");

        (void) fuzz_bytes(json_object_get(e, "id"), 1, id);
        s = json_object_get(e, "org");

        fuzz_assert(memcmp(id, d->projects[n].id, 16) == 0,
                    "an id read wrong");
        fuzz_assert(d->projects[n].org == json_string_value(s)
                    && d->projects[n].org_len == json_string_length(s),
                    "a project's org read wrong");
        fuzz_assert(d->projects[n].target_gender
                    == (unsigned) fuzz_target(json_object_get(e,
                                                         "targetGender")),
                    "a targetGender read wrong");
        fuzz_assert(n == 0 || memcmp(d->projects[n - 1].id, d->projects[n].id,
                                     16) < 0,
                    "projects not sorted");
    }

    return 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                          rc, ok;
    size_t                       i, len;
    json_t                      *root;
    json_error_t                 err;
    ngx_http_influencers_dir_t  *d;

    static const char  *kinds[] = {
        "the top level is not an object", "unknown field \"",
        "\"keys\" must be an array", "keys[", "projects[", NULL
    };

    /* as the module reads the file: json_load_file()'s flags */

    root = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        return 0;
    }

    d = malloc(sizeof(ngx_http_influencers_dir_t));
    fuzz_assert(d != NULL, "out of memory");

    rc = ngx_http_influencers_directory_parse(d, root);
    fuzz_assert(rc == 0 || rc == 1, "out of memory or a strange answer");

    ok = fuzz_reference(root, d, rc == 0);
    fuzz_assert(ok == (rc == 0), rc == 0 ? "accepted what the README refuses"
                                         : "refused what the README accepts");

    if (rc == 1) {
        len = strnlen(d->error, sizeof(d->error));
        fuzz_assert(len > 0 && len < sizeof(d->error), "an empty error");

        for (i = 0; kinds[i]; i++) {
            if (strncmp(d->error, kinds[i], strlen(kinds[i])) == 0) {
                break;
            }
        }

        fuzz_assert(kinds[i] != NULL, "an error of an unknown kind");
    }

    ngx_http_influencers_directory_free(d);
    free(d);

    return 0;
}
