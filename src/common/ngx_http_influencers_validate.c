
/*
 * Copyright (C) The influencers module authors.
 */


#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_influencers_validate.h"
#include "ngx_http_influencers_json.h"

#define NGX_HTTP_INFLUENCERS_INHERITED                                        \
    " is inherited from the project; override it with "                       \
    "PATCH /v1/influencers/:id."


typedef struct {
    const char  *key;
    const char  *message;
} ngx_http_influencers_banned_t;


const ngx_http_influencers_enum_t  ngx_http_influencers_genders[] = {
    { "", 0 },
    { "male", 4 },
    { "female", 6 },
    { "non_binary", 10 },
    { NULL, 0 }
};


const ngx_http_influencers_enum_t  ngx_http_influencers_age_ranges[] = {
    { "", 0 },
    { "teen", 4 },
    { "young_adult", 11 },
    { "adult", 5 },
    { "mid_adult", 9 },
    { "mature", 6 },
    { "senior", 6 },
    { NULL, 0 }
};


/* fields that partners often send and that deserve a reason (em dashes) */
static const ngx_http_influencers_banned_t  ngx_http_influencers_banned[] = {
    { "name",
      "Unrecognized key \xe2\x80\x94 name is server-generated." },
    { "brandVoice",
      "Unrecognized key \xe2\x80\x94 brandVoice"
      NGX_HTTP_INFLUENCERS_INHERITED },
    { "language",
      "Unrecognized key \xe2\x80\x94 language"
      NGX_HTTP_INFLUENCERS_INHERITED },
    { NULL, NULL }
};


/* a wrong type's message, by type: object, array, string, number,
 * boolean, null */

static const char *const  ngx_http_influencers_not_object[] = {
    "Expected object, received object",
    "Expected object, received array",
    "Expected object, received string",
    "Expected object, received number",
    "Expected object, received boolean",
    "Expected object, received null"
};


static const char *const  ngx_http_influencers_not_string[] = {
    "Expected string, received object",
    "Expected string, received array",
    "Expected string, received string",
    "Expected string, received number",
    "Expected string, received boolean",
    "Expected string, received null"
};


static void *ngx_http_influencers_validate_body_grow(void *old, size_t old_size,
    size_t size);
static void ngx_http_influencers_validate_body_release(void *p);
static int ngx_http_influencers_validate_add_error(
    ngx_http_influencers_body_t *b, const char *field, const char *message);
static int ngx_http_influencers_validate_json_error(
    ngx_http_influencers_body_t *b, json_error_t *err);
static int ngx_http_influencers_validate_load_zeroed(
    const u_char *p, size_t len, json_t **root, json_error_t *err);
static size_t ngx_http_influencers_validate_skip_number(
    const u_char *p, size_t i, size_t len);
static size_t ngx_http_influencers_validate_skip_digits(
    const u_char *p, size_t i, size_t len);
static const char *ngx_http_influencers_validate_type_error(json_t *v,
    const char *const *messages);
static int ngx_http_influencers_validate_group_errors(
    ngx_http_influencers_body_t *b);
static int ngx_http_influencers_validate_error_by_field(const void *a,
    const void *b);
static int ngx_http_influencers_validate_error_by_order(const void *a,
    const void *b);
static json_t *ngx_http_influencers_validate_errors_json(
    ngx_http_influencers_body_t *b);
static u_char *ngx_http_influencers_validate_error_message(u_char *p,
    const ngx_http_influencers_body_error_t *e);
static int ngx_http_influencers_validate_check_enum(
    ngx_http_influencers_body_t *b, const char *field, json_t *v,
    const ngx_http_influencers_enum_t *table, const char *message,
    unsigned int *out);
static int ngx_http_influencers_validate_check_prompt(
    ngx_http_influencers_body_t *b, json_t *v);
static int ngx_http_influencers_validate_check_field(
    ngx_http_influencers_body_t *b, const char *key, json_t *v);
static size_t ngx_http_influencers_validate_skip_ws(const u_char *p, size_t i,
    size_t len);
static size_t ngx_http_influencers_validate_skip_string(
    const u_char *p, size_t i, size_t len);
static size_t ngx_http_influencers_validate_skip_value(
    const u_char *p, size_t i, size_t len);
static int ngx_http_influencers_validate_check_duplicates(
    ngx_http_influencers_body_t *b, const u_char *p, size_t len);
static size_t ngx_http_influencers_validate_depth(const u_char *p, size_t len);


/* a problem recorded (INVALID), or no memory to record it (NO_MEMORY) */

#define ngx_http_influencers_body_refused(failed)                            \
    ((failed) ? NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY                           \
              : NGX_HTTP_INFLUENCERS_BODY_INVALID)


ngx_http_influencers_body_rc_e
ngx_http_influencers_validate_body_check(ngx_http_influencers_body_t *b,
    const u_char *p, size_t len)
{
    int           nested, dups, failed;
    const char   *key;
    json_t       *root, *v;
    json_error_t  err;

    memset(b, 0, sizeof(ngx_http_influencers_body_t));

    if (len == 0) {
        return NGX_HTTP_INFLUENCERS_BODY_VALID;
    }

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        failed = ngx_http_influencers_validate_add_error(b, NULL,
                                          "Byte-order mark is not allowed.");
        return ngx_http_influencers_body_refused(failed);
    }

    /*
     * A body without duplicated keys, any partner's, is parsed once and
     * never scanned for them.  One with them is parsed again as jansson
     * reads it by default (the last of the keys wins) and scanned, so that
     * every duplicate is named, and the first problem of a body that has
     * others is the one reported.
     */

    dups = 0;

    root = json_loadb((const char *) p, len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

    if (root == NULL && json_error_code(&err) == json_error_duplicate_key) {
        dups = 1;
        root = json_loadb((const char *) p, len, JSON_DECODE_ANY, &err);
    }

    if (root == NULL
        && json_error_code(&err) == json_error_numeric_overflow)
    {
        /* parsed again with no check for duplicates: scanned for them */
        dups = 1;

        if (ngx_http_influencers_validate_load_zeroed(p, len, &root,
                                                      &err) != 0) {
            return NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY;
        }
    }

    if (root == NULL) {
        failed = ngx_http_influencers_validate_json_error(b, &err);
        return ngx_http_influencers_body_refused(failed);
    }

    if (!json_is_object(root)) {
        key = ngx_http_influencers_validate_type_error(root,
            ngx_http_influencers_not_object);
        json_decref(root);
        failed = ngx_http_influencers_validate_add_error(b, NULL, key);
        return ngx_http_influencers_body_refused(failed);
    }

    b->root = root;

    if (dups && ngx_http_influencers_validate_check_duplicates(b, p,
                                                               len) != 0) {
        return NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY;
    }

    nested = 0;

    json_object_foreach(root, key, v) {
        nested |= json_is_object(v) || json_is_array(v);

        if (ngx_http_influencers_validate_check_field(b, key, v) != 0) {
            return NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY;
        }
    }

    /*
     * jansson allows 2048 levels; a valid body has one.  Deeper than a
     * few levels is no partner's request, and is said so.  Only a body
     * with a nested value is scanned for it.  (The answer lists formErrors
     * first, whenever they were found.)
     */

    if (nested
        && ngx_http_influencers_validate_depth(p, len)
           > NGX_HTTP_INFLUENCERS_MAX_DEPTH
        && ngx_http_influencers_validate_add_error(b, NULL,
                                                   "Nesting too deep.")
           != 0)
    {
        return NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY;
    }

    if (b->nerrs == 0) {
        return NGX_HTTP_INFLUENCERS_BODY_VALID;
    }

    failed = ngx_http_influencers_validate_group_errors(b);

    return ngx_http_influencers_body_refused(failed);
}


ngx_http_influencers_body_rc_e
ngx_http_influencers_validate_body_parse(ngx_http_influencers_body_t *b,
    const u_char *p, size_t len)
{
    ngx_http_influencers_body_rc_e  rc;

    rc = ngx_http_influencers_validate_body_check(b, p, len);

    if (rc == NGX_HTTP_INFLUENCERS_BODY_INVALID) {
        b->errors = ngx_http_influencers_validate_errors_json(b);
        if (b->errors == NULL) {
            return NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY;
        }
    }

    return rc;
}


void
ngx_http_influencers_validate_body_free(ngx_http_influencers_body_t *b)
{
    if (b->root) {
        json_decref(b->root);
        b->root = NULL;
    }

    if (b->errors) {
        json_decref(b->errors);
        b->errors = NULL;
    }

    ngx_http_influencers_validate_body_release(b->errs);
    b->errs = NULL;
    b->nerrs = 0;
    b->nalloc = 0;

    ngx_http_influencers_validate_body_release(b->names);
    b->names = NULL;
    b->names_len = 0;
    b->names_alloc = 0;
}


/*
 * The fingerprint of a keyed request hashes these bytes, and fingerprints
 * outlive the module that wrote them (state files, Redis): for every valid
 * body they stay what the module first wrote, nginx's ngx_escape_json() of
 * the prompt.  A valid body holds only the three known string fields, so
 * the form is written from them, without a second pass of jansson.
 */

size_t
ngx_http_influencers_validate_body_canonical(
    const ngx_http_influencers_body_t *b, u_char *out)
{
    u_char                             *p;
    const ngx_http_influencers_enum_t  *e;

    p = out;
    *p++ = '{';

    if (b->age_range) {
        e = &ngx_http_influencers_age_ranges[b->age_range];
        p = ngx_http_influencers_json_lit(p, "\"ageRange\":\"");
        p = ngx_http_influencers_json_raw(p, e->name, e->len);
        p = ngx_http_influencers_json_lit(p, "\",");
    }

    if (b->gender) {
        e = &ngx_http_influencers_genders[b->gender];
        p = ngx_http_influencers_json_lit(p, "\"gender\":\"");
        p = ngx_http_influencers_json_raw(p, e->name, e->len);
        p = ngx_http_influencers_json_lit(p, "\",");
    }

    if (b->prompt) {
        p = ngx_http_influencers_json_lit(p, "\"prompt\":\"");
        p = ngx_http_influencers_json_escape(p, b->prompt, b->prompt_len);
        p = ngx_http_influencers_json_lit(p, "\",");
    }

    /* the last field's comma, or none at all */

    if (p[-1] == ',') {
        p--;
    }

    *p++ = '}';

    return p - out;
}


static int
ngx_http_influencers_validate_check_field(ngx_http_influencers_body_t *b,
    const char *key, json_t *v)
{
    const ngx_http_influencers_banned_t  *ban;

    if (strcmp(key, "gender") == 0) {
        return ngx_http_influencers_validate_check_enum(b, key, v,
                   ngx_http_influencers_genders,
                   "Invalid enum value. Expected 'male' | 'female' | "
                   "'non_binary'", &b->gender);
    }

    if (strcmp(key, "ageRange") == 0) {
        return ngx_http_influencers_validate_check_enum(b, key, v,
                   ngx_http_influencers_age_ranges,
                   "Invalid enum value. Expected 'teen' | 'young_adult' | "
                   "'adult' | 'mid_adult' | 'mature' | 'senior'",
                   &b->age_range);
    }

    if (strcmp(key, "prompt") == 0) {
        return ngx_http_influencers_validate_check_prompt(b, v);
    }

    for (ban = ngx_http_influencers_banned; ban->key; ban++) {
        if (strcmp(key, ban->key) == 0) {
            return ngx_http_influencers_validate_add_error(b, key,
                                                           ban->message);
        }
    }

    return ngx_http_influencers_validate_add_error(b, key, "Unrecognized key.");
}


static int
ngx_http_influencers_validate_check_enum(ngx_http_influencers_body_t *b,
    const char *field, json_t *v, const ngx_http_influencers_enum_t *table,
    const char *message, unsigned int *out)
{
    unsigned int  i;

    if (!json_is_string(v)) {
        return ngx_http_influencers_validate_add_error(b, field,
                   ngx_http_influencers_validate_type_error(v,
                                             ngx_http_influencers_not_string));
    }

    i = ngx_http_influencers_validate_enum_find(table,
        (const u_char *) json_string_value(v), json_string_length(v));
    if (i == 0) {
        return ngx_http_influencers_validate_add_error(b, field, message);
    }

    *out = i;

    return 0;
}


static int
ngx_http_influencers_validate_check_prompt(ngx_http_influencers_body_t *b,
                                           json_t *v)
{
    size_t         i, len, chars;
    const u_char  *p;

    if (!json_is_string(v)) {
        return ngx_http_influencers_validate_add_error(b, "prompt",
                   ngx_http_influencers_validate_type_error(v,
                                             ngx_http_influencers_not_string));
    }

    p = (const u_char *) json_string_value(v);
    len = json_string_length(v);

    /* jansson has checked the UTF-8: count the bytes that start a char */

    chars = 0;

    for (i = 0; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            chars++;
        }
    }

    if (chars < 1) {
        return ngx_http_influencers_validate_add_error(b, "prompt",
                               "String must contain at least 1 character(s)");
    }

    if (chars > NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS) {
        return ngx_http_influencers_validate_add_error(b, "prompt",
                               "String must contain at most 60 character(s)");
    }

    b->prompt = p;
    b->prompt_len = len;

    return 0;
}


unsigned int
ngx_http_influencers_validate_enum_find(
    const ngx_http_influencers_enum_t *table, const u_char *p, size_t len)
{
    unsigned int  i;

    for (i = 1; table[i].name; i++) {
        if (table[i].len == len && memcmp(table[i].name, p, len) == 0) {
            return i;
        }
    }

    return 0;
}


/*
 * What the validation allocates comes from jansson's allocation functions,
 * as the body's objects do: in the module, the request's pool (see
 * src/http/ngx_http_influencers_jansson.c), so a request never calls
 * malloc() itself; built alone, for the unit tests and the fuzzers,
 * malloc().
 */

static void *
ngx_http_influencers_validate_body_grow(void *old, size_t old_size, size_t size)
{
    void           *p;
    json_free_t     f;
    json_malloc_t   m;

    json_get_alloc_funcs(&m, &f);

    p = m(size);
    if (p == NULL) {
        return NULL;
    }

    if (old) {
        memcpy(p, old, old_size);
        f(old);
    }

    return p;
}


static void
ngx_http_influencers_validate_body_release(void *p)
{
    json_free_t     f;
    json_malloc_t   m;

    if (p) {
        json_get_alloc_funcs(&m, &f);
        f(p);
    }
}


/*
 * Adds a message for fieldErrors[field], or for formErrors if field is
 * NULL.  A field's name is kept up to its first NUL, as jansson's objects
 * keyed by C strings did.
 */

static int
ngx_http_influencers_validate_add_error(ngx_http_influencers_body_t *b,
    const char *field, const char *message)
{
    size_t                              n, size;
    void                               *p;
    ngx_http_influencers_body_error_t  *e;

    if (b->nerrs == b->nalloc) {
        n = b->nalloc ? 2 * b->nalloc : 4;

        p = ngx_http_influencers_validate_body_grow(b->errs,
                b->nalloc * sizeof(ngx_http_influencers_body_error_t),
                n * sizeof(ngx_http_influencers_body_error_t));
        if (p == NULL) {
            return -1;
        }

        b->errs = p;
        b->nalloc = n;
    }

    e = &b->errs[b->nerrs];

    e->field = NULL;
    e->field_len = 0;
    e->message = message;
    e->name = (size_t) -1;
    e->seq = b->nerrs;
    e->first = b->nerrs;

    if (field) {
        n = strlen(field);

        if (b->names_alloc - b->names_len < n + 1) {
            size = b->names_alloc ? 2 * b->names_alloc : 256;

            while (size - b->names_len < n + 1) {
                size *= 2;
            }

            p = ngx_http_influencers_validate_body_grow(b->names, b->names_len,
                                                        size);
            if (p == NULL) {
                return -1;
            }

            b->names = p;
            b->names_alloc = size;
        }

        /* field is set once the names no longer move */
        e->name = b->names_len;
        e->field_len = n;

        memcpy(b->names + b->names_len, field, n + 1);
        b->names_len += n + 1;
    }

    b->nerrs++;

    return 0;
}


/*
 * The problems in the answer's order (see ngx_http_influencers_body_error_t):
 * sorted by field to find each field's first problem, then by that.  Two
 * sorts, whatever the number of problems and fields.
 */

static int
ngx_http_influencers_validate_group_errors(ngx_http_influencers_body_t *b)
{
    size_t                              i, first;
    ngx_http_influencers_body_error_t  *e;

    for (i = 0; i < b->nerrs; i++) {
        e = &b->errs[i];

        if (e->name != (size_t) -1) {
            e->field = b->names + e->name;
        }
    }

    if (b->nerrs < 2) {
        return 0;
    }

    qsort(b->errs, b->nerrs, sizeof(ngx_http_influencers_body_error_t),
          ngx_http_influencers_validate_error_by_field);

    first = 0;

    for (i = 0; i < b->nerrs; i++) {
        e = &b->errs[i];

        if (e->field == NULL) {
            continue;
        }

        if (i == 0 || b->errs[i - 1].field == NULL
            || b->errs[i - 1].field_len != e->field_len
            || memcmp(b->errs[i - 1].field, e->field, e->field_len) != 0)
        {
            first = e->seq;
        }

        e->first = first;
    }

    qsort(b->errs, b->nerrs, sizeof(ngx_http_influencers_body_error_t),
          ngx_http_influencers_validate_error_by_order);

    return 0;
}


/* formErrors first, then by field, each field's in the order found */

static int
ngx_http_influencers_validate_error_by_field(const void *a, const void *b)
{
    int                                       rc;
    size_t                                    n;
    const ngx_http_influencers_body_error_t  *x, *y;

    x = a;
    y = b;

    if (x->field == NULL || y->field == NULL) {
        if (x->field != y->field) {
            return x->field == NULL ? -1 : 1;
        }

    } else {
        n = x->field_len < y->field_len ? x->field_len : y->field_len;
        rc = memcmp(x->field, y->field, n);

        if (rc != 0) {
            return rc;
        }

        if (x->field_len != y->field_len) {
            return x->field_len < y->field_len ? -1 : 1;
        }
    }

    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}


/* formErrors first, then fields by their first problem */

static int
ngx_http_influencers_validate_error_by_order(const void *a, const void *b)
{
    const ngx_http_influencers_body_error_t  *x, *y;

    x = a;
    y = b;

    if (x->field == NULL || y->field == NULL) {
        if (x->field != y->field) {
            return x->field == NULL ? -1 : 1;
        }

    } else if (x->first != y->first) {
        return x->first < y->first ? -1 : 1;
    }

    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}


size_t
ngx_http_influencers_validate_body_errors_len(
    const ngx_http_influencers_body_t *b)
{
    size_t                                    i, len;
    const ngx_http_influencers_body_error_t  *e;

    len = NGX_HTTP_INFLUENCERS_JSON_LIT_LEN(
              "{\"formErrors\":[],\"fieldErrors\":{}}");

    for (i = 0; i < b->nerrs; i++) {
        e = &b->errs[i];

        /*
         * a "," or "]," before each, and ":[" and "]" around a field's;
         * messages are constants that need no escaping
         */

        len += 2 + 2 + strlen(e->message);

        if (ngx_http_influencers_validate_body_error_opens(b, i)) {
            len += 3 + ngx_http_influencers_json_str_len(e->field,
                                                         e->field_len);
        }
    }

    return len;
}


u_char *
ngx_http_influencers_validate_body_errors(const ngx_http_influencers_body_t *b,
    u_char *p)
{
    size_t                                    i, fields;
    const ngx_http_influencers_body_error_t  *e;

    p = ngx_http_influencers_json_lit(p, "{\"formErrors\":[");

    for (i = 0; i < b->nerrs && b->errs[i].field == NULL; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_http_influencers_validate_error_message(p, &b->errs[i]);
    }

    p = ngx_http_influencers_json_lit(p, "],\"fieldErrors\":{");

    for (fields = 0; i < b->nerrs; i++) {
        e = &b->errs[i];

        if (ngx_http_influencers_validate_body_error_opens(b, i)) {
            if (fields++) {
                p = ngx_http_influencers_json_lit(p, "],");
            }

            p = ngx_http_influencers_json_str(p, e->field, e->field_len);
            p = ngx_http_influencers_json_lit(p, ":[");

        } else {
            *p++ = ',';
        }

        p = ngx_http_influencers_validate_error_message(p, e);
    }

    if (fields) {
        *p++ = ']';
    }

    return ngx_http_influencers_json_lit(p, "}}");
}


/* a message: one of this file's constants, none of which needs escaping */

static u_char *
ngx_http_influencers_validate_error_message(u_char *p,
    const ngx_http_influencers_body_error_t *e)
{
    *p++ = '"';
    p = ngx_http_influencers_json_raw(p, e->message, strlen(e->message));
    *p++ = '"';

    return p;
}


/* {"formErrors":[...],"fieldErrors":{...}} as a jansson object */

static json_t *
ngx_http_influencers_validate_errors_json(ngx_http_influencers_body_t *b)
{
    size_t                              i;
    json_t                             *errors, *form, *fields, *list;
    ngx_http_influencers_body_error_t  *e;

    errors = json_object();
    form = json_array();
    fields = json_object();

    if (errors == NULL || form == NULL || fields == NULL
        || json_object_set_new(errors, "formErrors", form) != 0)
    {
        json_decref(form);
        json_decref(fields);
        json_decref(errors);
        return NULL;
    }

    if (json_object_set_new(errors, "fieldErrors", fields) != 0) {
        json_decref(errors);
        return NULL;
    }

    list = form;

    for (i = 0; i < b->nerrs; i++) {
        e = &b->errs[i];

        if (ngx_http_influencers_validate_body_error_opens(b, i)) {
            list = json_array();

            if (list == NULL
                || json_object_set_new(fields, (const char *) e->field, list)
                   != 0)
            {
                json_decref(errors);
                return NULL;
            }
        }

        if (json_array_append_new(list, json_string(e->message)) != 0) {
            json_decref(errors);
            return NULL;
        }
    }

    return errors;
}


static int
ngx_http_influencers_validate_json_error(ngx_http_influencers_body_t *b,
    json_error_t *err)
{
    const char  *message;

    switch (json_error_code(err)) {

    case json_error_out_of_memory:
        /* not the partner's mistake */
        return -1;

    case json_error_invalid_utf8:
        message = "Invalid UTF-8.";
        break;

    case json_error_stack_overflow:
        message = "Nesting too deep.";
        break;

    default:
        /* jansson names lone surrogates "invalid Unicode '\uD800'" */
        message = strncmp(err->text, "invalid Unicode", 15) == 0
                  ? "Invalid Unicode escape." : "Invalid JSON.";
    }

    return ngx_http_influencers_validate_add_error(b, NULL, message);
}


/*
 * RFC 8259 puts no bound on numbers; jansson refuses one that a long long
 * or a double cannot hold (1e999, 2^63, -1e999; 1e-999 it reads as 0) as
 * if the body were broken.  No number is a valid value anywhere in a body,
 * and where one is a mistake its type alone says so: a field's type, an
 * unknown key's value (not looked at), the top level.  So a body refused
 * for a number is parsed again from a copy in which every number is "0"
 * padded with spaces to the same length.
 *
 * Numbers are found the way jansson's lexer finds them: outside strings,
 * from a '-' or a digit, by the grammar of RFC 8259.  Only one that ends
 * where a value may end (whitespace, ',', ']', '}', the end) is replaced,
 * and by a number and whitespace.  Up to jansson's first error, then, the
 * copy is the same sequence of tokens but for the numbers' values, and its
 * first error, if any, is the body's first error that is not about a
 * number's size.  A number that overflows and is not replaced is followed
 * by something that cannot follow a value: the body is not JSON, and the
 * second parse says so.
 *
 * One copy, one pass over it, one more parse, and only for bodies that
 * jansson refused for a number: nothing loops.
 */

static int
ngx_http_influencers_validate_load_zeroed(const u_char *p, size_t len,
                                          json_t **root,
    json_error_t *err)
{
    size_t   i, end;
    u_char  *q;

    q = ngx_http_influencers_validate_body_grow(NULL, 0, len ? len : 1);
    if (q == NULL) {
        return -1;
    }

    memcpy(q, p, len);

    i = 0;

    while (i < len) {

        if (q[i] == '"') {
            i = ngx_http_influencers_validate_skip_string(q, i, len);
            continue;
        }

        if (q[i] != '-' && (q[i] < '0' || q[i] > '9')) {
            i++;
            continue;
        }

        end = ngx_http_influencers_validate_skip_number(q, i, len);

        if (end == i) {
            i++;
            continue;
        }

        if (end == len || q[end] == ' ' || q[end] == '\t' || q[end] == '\r'
            || q[end] == '\n' || q[end] == ',' || q[end] == ']'
            || q[end] == '}')
        {
            q[i] = '0';
            memset(q + i + 1, ' ', end - i - 1);
        }

        i = end;
    }

    *root = json_loadb((const char *) q, len, JSON_DECODE_ANY, err);

    ngx_http_influencers_validate_body_release(q);

    return 0;
}


/*
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i: the position after
 * it, or i if there is none
 */

static size_t
ngx_http_influencers_validate_skip_number(const u_char *p, size_t i, size_t len)
{
    size_t  j, k;

    j = i;

    if (j < len && p[j] == '-') {
        j++;
    }

    if (j < len && p[j] == '0') {
        j++;

    } else {
        k = ngx_http_influencers_validate_skip_digits(p, j, len);
        if (k == j) {
            return i;
        }

        j = k;
    }

    if (j < len && p[j] == '.') {
        k = ngx_http_influencers_validate_skip_digits(p, j + 1, len);
        if (k == j + 1) {
            return i;
        }

        j = k;
    }

    if (j < len && (p[j] == 'e' || p[j] == 'E')) {
        j++;

        if (j < len && (p[j] == '+' || p[j] == '-')) {
            j++;
        }

        k = ngx_http_influencers_validate_skip_digits(p, j, len);
        if (k == j) {
            return i;
        }

        j = k;
    }

    return j;
}


static size_t
ngx_http_influencers_validate_skip_digits(const u_char *p, size_t i, size_t len)
{
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        i++;
    }

    return i;
}


static const char *
ngx_http_influencers_validate_type_error(json_t *v, const char *const *messages)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return messages[0];
    case JSON_ARRAY:
        return messages[1];
    case JSON_STRING:
        return messages[2];
    case JSON_INTEGER:
    case JSON_REAL:
        return messages[3];
    case JSON_TRUE:
    case JSON_FALSE:
        return messages[4];
    default:
        return messages[5];
    }
}


/*
 * jansson keeps the last of duplicated keys silently, and with
 * JSON_REJECT_DUPLICATES stops at the first problem.  The body has been
 * parsed already, so its top level is a well-formed object: count its keys,
 * and only when there are more than the object holds, decode them to name
 * the duplicates.
 */

static int
ngx_http_influencers_validate_check_duplicates(ngx_http_influencers_body_t *b,
    const u_char *p, size_t len)
{
    int      rc;
    size_t   i, start, n;
    json_t  *seen, *key;
    int      decode;

    seen = NULL;
    rc = 0;

    for (decode = 0; decode < 2; decode++) {

        n = 0;
        i = ngx_http_influencers_validate_skip_ws(p, 0, len) + 1;

        for ( ;; ) {
            i = ngx_http_influencers_validate_skip_ws(p, i, len);

            if (i >= len || p[i] != '"') {
                break;
            }

            start = i;
            i = ngx_http_influencers_validate_skip_string(p, i, len);
            n++;

            if (decode) {
                key = json_loadb((const char *) p + start, i - start,
                                 JSON_DECODE_ANY, NULL);
                if (key == NULL) {
                    rc = -1;
                    goto done;
                }

                if (json_object_get(seen, json_string_value(key)) == NULL) {
                    rc = json_object_set_new(seen, json_string_value(key),
                                             json_true());

                } else if (json_object_get(seen, json_string_value(key))
                           == json_true())
                {
                    rc = ngx_http_influencers_validate_add_error(b,
                        json_string_value(key), "Duplicate key.");
                    if (rc == 0) {
                        rc = json_object_set_new(seen, json_string_value(key),
                                                 json_false());
                    }
                }

                json_decref(key);

                if (rc != 0) {
                    rc = -1;
                    goto done;
                }
            }

            i = ngx_http_influencers_validate_skip_ws(p, i,
                                                      len) + 1;   /* ':' */
            i = ngx_http_influencers_validate_skip_ws(p, i, len);
            i = ngx_http_influencers_validate_skip_value(p, i, len);
            i = ngx_http_influencers_validate_skip_ws(p, i, len);

            if (i >= len || p[i] != ',') {
                break;
            }

            i++;
        }

        if (decode == 0) {
            if (n == json_object_size(b->root)) {
                return 0;
            }

            seen = json_object();
            if (seen == NULL) {
                return -1;
            }
        }
    }

done:

    json_decref(seen);

    return rc;
}


/* the deepest nesting of a well-formed document */

static size_t
ngx_http_influencers_validate_depth(const u_char *p, size_t len)
{
    size_t  i, depth, max;

    depth = 0;
    max = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '"':
            i = ngx_http_influencers_validate_skip_string(p, i, len) - 1;
            break;

        case '{':
        case '[':
            if (++depth > max) {
                max = depth;
            }
            break;

        case '}':
        case ']':
            depth--;
            break;
        }
    }

    return max;
}


static size_t
ngx_http_influencers_validate_skip_ws(const u_char *p, size_t i, size_t len)
{
    while (i < len
           && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
    {
        i++;
    }

    return i;
}


/* i is at the opening quote; returns the position after the closing one */

static size_t
ngx_http_influencers_validate_skip_string(const u_char *p, size_t i, size_t len)
{
    for (i++; i < len && p[i] != '"'; i++) {
        if (p[i] == '\\') {
            i++;
        }
    }

    return i + 1;
}


static size_t
ngx_http_influencers_validate_skip_value(const u_char *p, size_t i, size_t len)
{
    size_t  depth;

    depth = 0;

    while (i < len) {

        switch (p[i]) {

        case '"':
            i = ngx_http_influencers_validate_skip_string(p, i, len);
            if (depth == 0) {
                return i;
            }
            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            if (depth == 0) {
                return i;
            }

            if (--depth == 0) {
                return i + 1;
            }
            break;

        case ',':
        case ' ':
        case '\t':
        case '\r':
        case '\n':
            if (depth == 0) {
                return i;
            }
            break;
        }

        i++;
    }

    return i;
}


/* where each byte's two hex digits start in 8-4-4-4-12 */

static const u_char
    ngx_http_influencers_uuid_pos[NGX_HTTP_INFLUENCERS_UUID_BYTES] = {
    0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34
};


int
ngx_http_influencers_validate_hex_digit(u_char c)
{
    if ((unsigned int) (c - '0') < 10) {
        return c - '0';
    }

    c |= 0x20;

    if ((unsigned int) (c - 'a') < 6) {
        return c - 'a' + 10;
    }

    return -1;
}


int
ngx_http_influencers_validate_parse_uuid(const u_char *p, size_t len,
                                         u_char *out)
{
    int            hi, lo;
    size_t         i;
    const u_char  *d;

    if (len != NGX_HTTP_INFLUENCERS_UUID_LEN
        || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-')
    {
        return -1;
    }

    for (i = 0; i < NGX_HTTP_INFLUENCERS_UUID_BYTES; i++) {
        d = p + ngx_http_influencers_uuid_pos[i];
        hi = ngx_http_influencers_validate_hex_digit(d[0]);
        lo = ngx_http_influencers_validate_hex_digit(d[1]);

        if ((hi | lo) < 0) {
            return -1;
        }

        out[i] = (u_char) ((hi << 4) | lo);
    }

    return 0;
}


void
ngx_http_influencers_validate_format_uuid(const u_char *id, u_char *out)
{
    size_t             i;
    u_char            *q;
    static const char  hex[] = "0123456789abcdef";

    out[8] = '-';
    out[13] = '-';
    out[18] = '-';
    out[23] = '-';

    for (i = 0; i < NGX_HTTP_INFLUENCERS_UUID_BYTES; i++) {
        q = out + ngx_http_influencers_uuid_pos[i];
        q[0] = hex[id[i] >> 4];
        q[1] = hex[id[i] & 0xf];
    }
}


ssize_t
ngx_http_influencers_validate_parse_idempotency_key(const u_char *p, size_t len,
    u_char *out)
{
    size_t  i, n;

    if (len == 0) {
        return -1;
    }

    if (p[0] != '"') {
        if (len > NGX_HTTP_INFLUENCERS_IDEM_MAX) {
            return -1;
        }

        for (i = 0; i < len; i++) {
            if (p[i] < 0x21 || p[i] > 0x7e) {
                return -1;
            }
        }

        memcpy(out, p, len);

        return len;
    }

    /* an RFC 8941 sf-string: only \" and \\ escapes, nothing after it */

    if (len < 2 || p[len - 1] != '"') {
        return -1;
    }

    n = 0;

    for (i = 1; i < len - 1; i++) {

        if (p[i] == '"') {
            return -1;
        }

        if (p[i] == '\\') {
            if (i + 1 >= len - 1 || (p[i + 1] != '"' && p[i + 1] != '\\')) {
                return -1;
            }
            i++;
        }

        if (p[i] < 0x21 || p[i] > 0x7e || n == NGX_HTTP_INFLUENCERS_IDEM_MAX) {
            return -1;
        }

        out[n++] = p[i];
    }

    if (n == 0) {
        return -1;
    }

    return n;
}


int
ngx_http_influencers_validate_parse_bearer(const u_char *p, size_t len,
    const u_char **key, size_t *key_len)
{
    size_t  i;

    if (len < 8 || strncasecmp((const char *) p, "bearer ", 7) != 0) {
        return -1;
    }

    for (i = 7; i < len && p[i] == ' '; i++) { /* void */ }

    if (i == len) {
        return -1;
    }

    *key = p + i;
    *key_len = len - i;

    for ( /* void */ ; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e) {
            return -1;
        }
    }

    return 0;
}


int
ngx_http_influencers_validate_check_content_type(const u_char *p, size_t len)
{
    size_t         i, name, name_len, value, value_len;
    static const char  type[] = "application/json";

    if (len < sizeof(type) - 1
        || strncasecmp((const char *) p, type, sizeof(type) - 1) != 0)
    {
        return -1;
    }

    i = sizeof(type) - 1;

    for ( ;; ) {
        while (i < len && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }

        if (i == len) {
            return 0;
        }

        if (p[i] != ';') {
            return -1;
        }

        i++;

        while (i < len && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }

        name = i;

        while (i < len && p[i] != '=' && p[i] != ';') {
            i++;
        }

        name_len = i - name;

        while (name_len && (p[name + name_len - 1] == ' '
                            || p[name + name_len - 1] == '\t'))
        {
            name_len--;
        }

        if (i == len || p[i] == ';') {
            if (name_len) {
                return -1;
            }
            continue;
        }

        value = ++i;

        while (i < len && p[i] != ';') {
            i++;
        }

        value_len = i - value;

        while (value_len && (p[value + value_len - 1] == ' '
                             || p[value + value_len - 1] == '\t'))
        {
            value_len--;
        }

        if (value_len >= 2 && p[value] == '"'
            && p[value + value_len - 1] == '"')
        {
            value++;
            value_len -= 2;
        }

        if (name_len == 7
            && strncasecmp((const char *) p + name, "charset", 7) == 0
            && (value_len != 5
                || strncasecmp((const char *) p + value, "utf-8", 5) != 0))
        {
            return -1;
        }
    }
}


int
ngx_http_influencers_validate_has_scope(const u_char *p, size_t len,
    const char *scope, size_t scope_len)
{
    size_t  i, start;

    i = 0;

    while (i < len) {
        while (i < len && (p[i] == ' ' || p[i] == ',')) {
            i++;
        }

        start = i;

        while (i < len && p[i] != ' ' && p[i] != ',') {
            i++;
        }

        if (i - start == scope_len && memcmp(p + start, scope, scope_len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
