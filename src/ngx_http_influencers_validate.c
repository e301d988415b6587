
/*
 * Copyright (C) The influencers module authors.
 */


#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_influencers_validate.h"


#define ngx_http_influencers_literal(p, s)                                    \
    ngx_http_influencers_cpy(p, s, sizeof(s) - 1)

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


static int ngx_http_influencers_add_error(ngx_http_influencers_body_t *b,
    const char *field, const char *message);
static int ngx_http_influencers_json_error(ngx_http_influencers_body_t *b,
    json_error_t *err);
static int ngx_http_influencers_load_zeroed(const u_char *p, size_t len,
    json_t **root, json_error_t *err);
static size_t ngx_http_influencers_skip_number(const u_char *p, size_t i,
    size_t len);
static size_t ngx_http_influencers_skip_digits(const u_char *p, size_t i,
    size_t len);
static const char *ngx_http_influencers_type_name(json_t *v);
static int ngx_http_influencers_check_enum(ngx_http_influencers_body_t *b,
    const char *field, json_t *v, const ngx_http_influencers_enum_t *table,
    const char *message, unsigned int *out);
static int ngx_http_influencers_check_prompt(ngx_http_influencers_body_t *b,
    json_t *v);
static u_char *ngx_http_influencers_escape(u_char *dst, const u_char *src,
    size_t len);
static u_char *ngx_http_influencers_cpy(u_char *dst, const char *src,
    size_t len);
static int ngx_http_influencers_check_field(ngx_http_influencers_body_t *b,
    const char *key, json_t *v);
static size_t ngx_http_influencers_skip_ws(const u_char *p, size_t i,
    size_t len);
static size_t ngx_http_influencers_skip_string(const u_char *p, size_t i,
    size_t len);
static size_t ngx_http_influencers_skip_value(const u_char *p, size_t i,
    size_t len);
static int ngx_http_influencers_check_duplicates(
    ngx_http_influencers_body_t *b, const u_char *p, size_t len);
static size_t ngx_http_influencers_depth(const u_char *p, size_t len);


int
ngx_http_influencers_body_parse(ngx_http_influencers_body_t *b,
    const u_char *p, size_t len)
{
    int           rc, nested;
    char          message[64];
    const char   *key;
    json_t       *root, *v;
    json_error_t  err;

    memset(b, 0, sizeof(ngx_http_influencers_body_t));

    if (len == 0) {
        return 0;
    }

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        rc = ngx_http_influencers_add_error(b, NULL,
                                            "Byte-order mark is not allowed.");
        return rc ? -1 : 1;
    }

    root = json_loadb((const char *) p, len, JSON_DECODE_ANY, &err);

    if (root == NULL
        && json_error_code(&err) == json_error_numeric_overflow
        && ngx_http_influencers_load_zeroed(p, len, &root, &err) != 0)
    {
        return -1;
    }

    if (root == NULL) {
        return ngx_http_influencers_json_error(b, &err) ? -1 : 1;
    }

    if (!json_is_object(root)) {
        snprintf(message, sizeof(message), "Expected object, received %s",
                 ngx_http_influencers_type_name(root));
        json_decref(root);
        return ngx_http_influencers_add_error(b, NULL, message) ? -1 : 1;
    }

    b->root = root;

    /*
     * jansson allows 2048 levels; a valid body has one.  Deeper than a
     * few levels is no partner's request, and is said so.  Only a body
     * with a nested value is scanned for it.
     */

    nested = 0;

    json_object_foreach(root, key, v) {
        nested |= json_is_object(v) || json_is_array(v);
    }

    if (nested
        && ngx_http_influencers_depth(p, len) > NGX_HTTP_INFLUENCERS_MAX_DEPTH
        && ngx_http_influencers_add_error(b, NULL, "Nesting too deep.") != 0)
    {
        return -1;
    }

    if (ngx_http_influencers_check_duplicates(b, p, len) != 0) {
        return -1;
    }

    json_object_foreach(root, key, v) {
        if (ngx_http_influencers_check_field(b, key, v) != 0) {
            return -1;
        }
    }

    rc = (b->errors != NULL);

    return rc;
}


void
ngx_http_influencers_body_free(ngx_http_influencers_body_t *b)
{
    if (b->root) {
        json_decref(b->root);
        b->root = NULL;
    }

    if (b->errors) {
        json_decref(b->errors);
        b->errors = NULL;
    }
}


/*
 * The fingerprint of a keyed request hashes these bytes, and fingerprints
 * outlive the module that wrote them (state files, Redis): for every valid
 * body they stay what the module first wrote, nginx's ngx_escape_json() of
 * the prompt.  A valid body holds only the three known string fields, so
 * the form is written from them, without a second pass of jansson.
 */

size_t
ngx_http_influencers_body_canonical(const ngx_http_influencers_body_t *b,
    u_char *out)
{
    u_char                             *p;
    const ngx_http_influencers_enum_t  *e;

    p = out;
    *p++ = '{';

    if (b->age_range) {
        e = &ngx_http_influencers_age_ranges[b->age_range];
        p = ngx_http_influencers_literal(p, "\"ageRange\":\"");
        p = ngx_http_influencers_cpy(p, e->name, e->len);
        p = ngx_http_influencers_literal(p, "\",");
    }

    if (b->gender) {
        e = &ngx_http_influencers_genders[b->gender];
        p = ngx_http_influencers_literal(p, "\"gender\":\"");
        p = ngx_http_influencers_cpy(p, e->name, e->len);
        p = ngx_http_influencers_literal(p, "\",");
    }

    if (b->prompt) {
        p = ngx_http_influencers_literal(p, "\"prompt\":\"");
        p = ngx_http_influencers_escape(p, b->prompt, b->prompt_len);
        p = ngx_http_influencers_literal(p, "\",");
    }

    /* the last field's comma, or none at all */

    if (p[-1] == ',') {
        p--;
    }

    *p++ = '}';

    return p - out;
}


/*
 * What ngx_escape_json() writes, byte for byte: a quote and a backslash
 * escaped by a backslash, the five controls that JSON names by a letter
 * (\b \t \n \f \r) so, the other controls as \u00XX in upper-case hex,
 * and every other byte, DEL and UTF-8 included, as it is.
 */

static u_char *
ngx_http_influencers_escape(u_char *dst, const u_char *src, size_t len)
{
    u_char             c;
    static const char  hex[] = "0123456789ABCDEF";

    while (len--) {
        c = *src++;

        if (c > 0x1f) {
            if (c == '"' || c == '\\') {
                *dst++ = '\\';
            }

            *dst++ = c;
            continue;
        }

        *dst++ = '\\';

        switch (c) {

        case '\b':
            *dst++ = 'b';
            break;

        case '\t':
            *dst++ = 't';
            break;

        case '\n':
            *dst++ = 'n';
            break;

        case '\f':
            *dst++ = 'f';
            break;

        case '\r':
            *dst++ = 'r';
            break;

        default:
            *dst++ = 'u';
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];
        }
    }

    return dst;
}


static u_char *
ngx_http_influencers_cpy(u_char *dst, const char *src, size_t len)
{
    memcpy(dst, src, len);

    return dst + len;
}


static int
ngx_http_influencers_check_field(ngx_http_influencers_body_t *b,
    const char *key, json_t *v)
{
    const ngx_http_influencers_banned_t  *ban;

    if (strcmp(key, "gender") == 0) {
        return ngx_http_influencers_check_enum(b, key, v,
                   ngx_http_influencers_genders,
                   "Invalid enum value. Expected 'male' | 'female' | "
                   "'non_binary'", &b->gender);
    }

    if (strcmp(key, "ageRange") == 0) {
        return ngx_http_influencers_check_enum(b, key, v,
                   ngx_http_influencers_age_ranges,
                   "Invalid enum value. Expected 'teen' | 'young_adult' | "
                   "'adult' | 'mid_adult' | 'mature' | 'senior'",
                   &b->age_range);
    }

    if (strcmp(key, "prompt") == 0) {
        return ngx_http_influencers_check_prompt(b, v);
    }

    for (ban = ngx_http_influencers_banned; ban->key; ban++) {
        if (strcmp(key, ban->key) == 0) {
            return ngx_http_influencers_add_error(b, key, ban->message);
        }
    }

    return ngx_http_influencers_add_error(b, key, "Unrecognized key.");
}


static int
ngx_http_influencers_check_enum(ngx_http_influencers_body_t *b,
    const char *field, json_t *v, const ngx_http_influencers_enum_t *table,
    const char *message, unsigned int *out)
{
    char          buf[64];
    unsigned int  i;

    if (!json_is_string(v)) {
        snprintf(buf, sizeof(buf), "Expected string, received %s",
                 ngx_http_influencers_type_name(v));
        return ngx_http_influencers_add_error(b, field, buf);
    }

    i = ngx_http_influencers_enum_find(table,
                                       (const u_char *) json_string_value(v),
                                       json_string_length(v));
    if (i == 0) {
        return ngx_http_influencers_add_error(b, field, message);
    }

    *out = i;

    return 0;
}


static int
ngx_http_influencers_check_prompt(ngx_http_influencers_body_t *b, json_t *v)
{
    char           buf[64];
    size_t         i, len, chars;
    const u_char  *p;

    if (!json_is_string(v)) {
        snprintf(buf, sizeof(buf), "Expected string, received %s",
                 ngx_http_influencers_type_name(v));
        return ngx_http_influencers_add_error(b, "prompt", buf);
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
        return ngx_http_influencers_add_error(b, "prompt",
                               "String must contain at least 1 character(s)");
    }

    if (chars > NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS) {
        return ngx_http_influencers_add_error(b, "prompt",
                               "String must contain at most 60 character(s)");
    }

    b->prompt = p;
    b->prompt_len = len;

    return 0;
}


unsigned int
ngx_http_influencers_enum_find(const ngx_http_influencers_enum_t *table,
    const u_char *p, size_t len)
{
    unsigned int  i;

    for (i = 1; table[i].name; i++) {
        if (table[i].len == len && memcmp(table[i].name, p, len) == 0) {
            return i;
        }
    }

    return 0;
}


/* adds a message to fieldErrors[field], or to formErrors if field is NULL */

static int
ngx_http_influencers_add_error(ngx_http_influencers_body_t *b,
    const char *field, const char *message)
{
    json_t  *list, *fields;

    if (b->errors == NULL) {
        b->errors = json_pack("{s:[],s:{}}", "formErrors", "fieldErrors");
        if (b->errors == NULL) {
            return -1;
        }
    }

    if (field == NULL) {
        list = json_object_get(b->errors, "formErrors");

    } else {
        fields = json_object_get(b->errors, "fieldErrors");
        list = json_object_get(fields, field);

        if (list == NULL) {
            list = json_array();
            if (list == NULL || json_object_set_new(fields, field, list) != 0) {
                return -1;
            }
        }
    }

    return json_array_append_new(list, json_string(message)) != 0 ? -1 : 0;
}


static int
ngx_http_influencers_json_error(ngx_http_influencers_body_t *b,
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

    return ngx_http_influencers_add_error(b, NULL, message);
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
ngx_http_influencers_load_zeroed(const u_char *p, size_t len, json_t **root,
    json_error_t *err)
{
    size_t   i, end;
    u_char  *q;

    q = malloc(len);
    if (q == NULL) {
        return -1;
    }

    memcpy(q, p, len);

    i = 0;

    while (i < len) {

        if (q[i] == '"') {
            i = ngx_http_influencers_skip_string(q, i, len);
            continue;
        }

        if (q[i] != '-' && (q[i] < '0' || q[i] > '9')) {
            i++;
            continue;
        }

        end = ngx_http_influencers_skip_number(q, i, len);

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

    free(q);

    return 0;
}


/*
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i: the position after
 * it, or i if there is none
 */

static size_t
ngx_http_influencers_skip_number(const u_char *p, size_t i, size_t len)
{
    size_t  j, k;

    j = i;

    if (j < len && p[j] == '-') {
        j++;
    }

    if (j < len && p[j] == '0') {
        j++;

    } else {
        k = ngx_http_influencers_skip_digits(p, j, len);
        if (k == j) {
            return i;
        }

        j = k;
    }

    if (j < len && p[j] == '.') {
        k = ngx_http_influencers_skip_digits(p, j + 1, len);
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

        k = ngx_http_influencers_skip_digits(p, j, len);
        if (k == j) {
            return i;
        }

        j = k;
    }

    return j;
}


static size_t
ngx_http_influencers_skip_digits(const u_char *p, size_t i, size_t len)
{
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        i++;
    }

    return i;
}


static const char *
ngx_http_influencers_type_name(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
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
ngx_http_influencers_check_duplicates(ngx_http_influencers_body_t *b,
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
        i = ngx_http_influencers_skip_ws(p, 0, len) + 1;

        for ( ;; ) {
            i = ngx_http_influencers_skip_ws(p, i, len);

            if (i >= len || p[i] != '"') {
                break;
            }

            start = i;
            i = ngx_http_influencers_skip_string(p, i, len);
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
                    rc = ngx_http_influencers_add_error(b,
                                                        json_string_value(key),
                                                        "Duplicate key.");
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

            i = ngx_http_influencers_skip_ws(p, i, len) + 1;   /* ':' */
            i = ngx_http_influencers_skip_ws(p, i, len);
            i = ngx_http_influencers_skip_value(p, i, len);
            i = ngx_http_influencers_skip_ws(p, i, len);

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
ngx_http_influencers_depth(const u_char *p, size_t len)
{
    size_t  i, depth, max;

    depth = 0;
    max = 0;

    for (i = 0; i < len; i++) {

        switch (p[i]) {

        case '"':
            i = ngx_http_influencers_skip_string(p, i, len) - 1;
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
ngx_http_influencers_skip_ws(const u_char *p, size_t i, size_t len)
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
ngx_http_influencers_skip_string(const u_char *p, size_t i, size_t len)
{
    for (i++; i < len && p[i] != '"'; i++) {
        if (p[i] == '\\') {
            i++;
        }
    }

    return i + 1;
}


static size_t
ngx_http_influencers_skip_value(const u_char *p, size_t i, size_t len)
{
    size_t  depth;

    depth = 0;

    while (i < len) {

        switch (p[i]) {

        case '"':
            i = ngx_http_influencers_skip_string(p, i, len);
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


int
ngx_http_influencers_parse_uuid(const u_char *p, size_t len, u_char *out)
{
    size_t  i, n;
    u_char  c, v;

    if (len != NGX_HTTP_INFLUENCERS_UUID_LEN) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return -1;
            }
            continue;
        }

        if (c >= '0' && c <= '9') {
            v = c - '0';

        } else {
            c |= 0x20;

            if (c >= 'a' && c <= 'f') {
                v = c - 'a' + 10;

            } else {
                return -1;
            }
        }

        if (n & 1) {
            out[n / 2] |= v;

        } else {
            out[n / 2] = (u_char) (v << 4);
        }

        n++;
    }

    return 0;
}


void
ngx_http_influencers_format_uuid(const u_char *id, u_char *out)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *out++ = '-';
        }

        *out++ = hex[id[i] >> 4];
        *out++ = hex[id[i] & 0xf];
    }
}


ssize_t
ngx_http_influencers_parse_idempotency_key(const u_char *p, size_t len,
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
ngx_http_influencers_parse_bearer(const u_char *p, size_t len,
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
ngx_http_influencers_check_content_type(const u_char *p, size_t len)
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
ngx_http_influencers_has_scope(const u_char *p, size_t len,
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
