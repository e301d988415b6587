
/*
 * Copyright (C) The influencers module authors.
 *
 * libFuzzer harness: the body validator and the body's canonical form,
 * the bytes that a keyed request's fingerprint hashes.  Besides what ASan
 * and UBSan catch, every input is held to these properties:
 *
 *   - the validator accepts exactly what an independent check accepts:
 *     jansson with JSON_REJECT_DUPLICATES, an object of known string
 *     fields with valid values (or an empty body);
 *   - a refusal says why, in the shape partners get;
 *   - the canonical form of an accepted body means the same JSON as the
 *     body, is itself accepted with the same fields, and is its own
 *     canonical form: two bodies with one canonical form mean the same;
 *   - the same meaning written otherwise (keys in another order, other
 *     whitespace, other escapes, "\u0065" for "e", surrogate pairs) gives
 *     the same canonical form, and a changed field a different one.
 *
 * Any broken property aborts, which libFuzzer reports as a crash.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_influencers_validate.h"


/* a body rewritten with escapes may take six times its room, and more */
#define FUZZ_TEXT_MAX  8192


typedef struct {
    unsigned int      gender;
    unsigned int      age_range;
    u_char            prompt[NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES];
    size_t            prompt_len;
    unsigned int      has_prompt;
} fuzz_meaning_t;


typedef struct {
    u_char           *p;
    u_char           *end;
} fuzz_out_t;


static uint64_t  fuzz_rng;


#define fuzz_assert(cond, what)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_body: %s (%s:%d)\n", what, __FILE__,         \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)


/* splitmix64, seeded from the input: a crash replays the same choices */

static uint64_t
fuzz_random(void)
{
    uint64_t  z;

    z = (fuzz_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


static unsigned int
fuzz_pick(unsigned int n)
{
    return (unsigned int) (fuzz_random() % n);
}


static void
fuzz_put(fuzz_out_t *o, const void *s, size_t len)
{
    fuzz_assert((size_t) (o->end - o->p) >= len, "rewrite buffer too small");

    memcpy(o->p, s, len);
    o->p += len;
}


static void
fuzz_ws(fuzz_out_t *o)
{
    static const char  *ws[] = { "", "", "", " ", "\n", "\t", "\r\n  " };
    const char         *w;

    w = ws[fuzz_pick(sizeof(ws) / sizeof(ws[0]))];
    fuzz_put(o, w, strlen(w));
}


/* one code point of valid UTF-8: its value, and its length in *n */

static uint32_t
fuzz_utf8(const u_char *p, size_t len, size_t *n)
{
    if (p[0] < 0x80) {
        *n = 1;
        return p[0];
    }

    if (p[0] < 0xe0) {
        fuzz_assert(len >= 2, "truncated UTF-8");
        *n = 2;
        return (uint32_t) (p[0] & 0x1f) << 6 | (p[1] & 0x3f);
    }

    if (p[0] < 0xf0) {
        fuzz_assert(len >= 3, "truncated UTF-8");
        *n = 3;
        return (uint32_t) (p[0] & 0x0f) << 12 | (uint32_t) (p[1] & 0x3f) << 6
               | (p[2] & 0x3f);
    }

    fuzz_assert(len >= 4, "truncated UTF-8");
    *n = 4;

    return (uint32_t) (p[0] & 0x07) << 18 | (uint32_t) (p[1] & 0x3f) << 12
           | (uint32_t) (p[2] & 0x3f) << 6 | (p[3] & 0x3f);
}


static void
fuzz_u_escape(fuzz_out_t *o, uint32_t unit)
{
    char  buf[8];

    snprintf(buf, sizeof(buf), fuzz_pick(2) ? "\\u%04x" : "\\u%04X", unit);
    fuzz_put(o, buf, 6);
}


/* a JSON string of the same bytes, each character written one of its ways */

static void
fuzz_string(fuzz_out_t *o, const u_char *s, size_t len)
{
    u_char      c;
    size_t      i, n;
    uint32_t    cp;
    const char *short_escape;

    fuzz_put(o, "\"", 1);

    for (i = 0; i < len; i += n) {
        cp = fuzz_utf8(s + i, len - i, &n);
        c = (u_char) cp;

        short_escape = NULL;

        if (cp < 0x80) {
            switch (c) {
            case '"':  short_escape = "\\\""; break;
            case '\\': short_escape = "\\\\"; break;
            case '/':  short_escape = "\\/"; break;
            case '\b': short_escape = "\\b"; break;
            case '\f': short_escape = "\\f"; break;
            case '\n': short_escape = "\\n"; break;
            case '\r': short_escape = "\\r"; break;
            case '\t': short_escape = "\\t"; break;
            }
        }

        switch (fuzz_pick(3)) {

        case 0:
            if (cp >= 0x20 && cp != '"' && cp != '\\') {
                fuzz_put(o, s + i, n);
                break;
            }

            /* fall through */

        case 1:
            if (short_escape) {
                fuzz_put(o, short_escape, 2);
                break;
            }

            /* fall through */

        default:
            if (cp < 0x10000) {
                fuzz_u_escape(o, cp);

            } else {
                cp -= 0x10000;
                fuzz_u_escape(o, 0xd800 | (cp >> 10));
                fuzz_u_escape(o, 0xdc00 | (cp & 0x3ff));
            }
        }
    }

    fuzz_put(o, "\"", 1);
}


/* a body that means m, written one of many ways */

static size_t
fuzz_serialize(const fuzz_meaning_t *m, u_char *buf, size_t size)
{
    unsigned int                        order[3], n, i, j, t;
    fuzz_out_t                          o;
    const ngx_http_influencers_enum_t  *e;

    o.p = buf;
    o.end = buf + size;

    n = 0;

    if (m->gender) {
        order[n++] = 0;
    }

    if (m->age_range) {
        order[n++] = 1;
    }

    if (m->has_prompt) {
        order[n++] = 2;
    }

    for (i = n; i > 1; i--) {
        j = fuzz_pick(i);
        t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }

    fuzz_ws(&o);
    fuzz_put(&o, "{", 1);

    for (i = 0; i < n; i++) {
        fuzz_ws(&o);

        if (i) {
            fuzz_put(&o, ",", 1);
            fuzz_ws(&o);
        }

        switch (order[i]) {

        case 0:
            fuzz_string(&o, (const u_char *) "gender", 6);
            fuzz_ws(&o);
            fuzz_put(&o, ":", 1);
            fuzz_ws(&o);
            e = &ngx_http_influencers_genders[m->gender];
            fuzz_string(&o, (const u_char *) e->name, e->len);
            break;

        case 1:
            fuzz_string(&o, (const u_char *) "ageRange", 8);
            fuzz_ws(&o);
            fuzz_put(&o, ":", 1);
            fuzz_ws(&o);
            e = &ngx_http_influencers_age_ranges[m->age_range];
            fuzz_string(&o, (const u_char *) e->name, e->len);
            break;

        default:
            fuzz_string(&o, (const u_char *) "prompt", 6);
            fuzz_ws(&o);
            fuzz_put(&o, ":", 1);
            fuzz_ws(&o);
            fuzz_string(&o, m->prompt, m->prompt_len);
        }
    }

    fuzz_ws(&o);
    fuzz_put(&o, "}", 1);
    fuzz_ws(&o);

    return o.p - buf;
}


static void
fuzz_meaning(const ngx_http_influencers_body_t *b, fuzz_meaning_t *m)
{
    memset(m, 0, sizeof(fuzz_meaning_t));

    m->gender = b->gender;
    m->age_range = b->age_range;

    if (b->prompt) {
        fuzz_assert(b->prompt_len <= NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES,
                    "prompt longer than its bound");
        m->has_prompt = 1;
        m->prompt_len = b->prompt_len;
        memcpy(m->prompt, b->prompt, b->prompt_len);
    }
}


static int
fuzz_same_meaning(const fuzz_meaning_t *a, const fuzz_meaning_t *b)
{
    return a->gender == b->gender && a->age_range == b->age_range
           && a->has_prompt == b->has_prompt
           && a->prompt_len == b->prompt_len
           && memcmp(a->prompt, b->prompt, a->prompt_len) == 0;
}


static size_t
fuzz_chars(const u_char *p, size_t len)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        n += (p[i] & 0xc0) != 0x80;
    }

    return n;
}


/* another valid meaning: one field changed, added or dropped */

static void
fuzz_change(fuzz_meaning_t *m)
{
    size_t              n;
    const char         *c;
    static const char  *chars[] = { "x", "\"", "\\", "\x01", "\x1f", "\x7f",
                                    "/", "\xc3\xa9", "\xe2\x80\x94",
                                    "\xf0\x9f\x98\x80" };

    switch (fuzz_pick(3)) {

    case 0:
        m->gender = (m->gender + 1 + fuzz_pick(3)) % 4;
        break;

    case 1:
        m->age_range = (m->age_range + 1 + fuzz_pick(6)) % 7;
        break;

    default:
        if (!m->has_prompt) {
            m->has_prompt = 1;
            m->prompt[0] = 'x';
            m->prompt_len = 1;
            break;
        }

        if (fuzz_pick(4) == 0) {
            m->has_prompt = 0;
            m->prompt_len = 0;
            break;
        }

        c = chars[fuzz_pick(sizeof(chars) / sizeof(chars[0]))];
        n = strlen(c);

        if (fuzz_chars(m->prompt, m->prompt_len)
            < NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS)
        {
            memcpy(m->prompt + m->prompt_len, c, n);
            m->prompt_len += n;
            break;
        }

        /*
         * 60 characters: the first one becomes another ASCII letter, and
         * the continuation bytes of what it replaces go with it
         */

        for (n = 1; (m->prompt[n] & 0xc0) == 0x80; n++) { /* void */ }

        m->prompt[0] = (m->prompt[0] == 'a') ? 'b' : 'a';
        memmove(m->prompt + 1, m->prompt + n, m->prompt_len - n);
        m->prompt_len -= n - 1;
    }
}


/* the canonical form of text, which must be valid, in out */

static size_t
fuzz_canonical_of(const u_char *text, size_t len, u_char *out,
    fuzz_meaning_t *m)
{
    int                          rc;
    size_t                       n;
    ngx_http_influencers_body_t  b;

    rc = ngx_http_influencers_validate_body_parse(&b, text, len);

    if (rc != 0) {
        fprintf(stderr, "refused: %.*s\n", (int) len, text);
    }

    fuzz_assert(rc == 0, "an equivalent body is refused");

    n = ngx_http_influencers_validate_body_canonical(&b, out);
    fuzz_assert(n <= NGX_HTTP_INFLUENCERS_CANONICAL_MAX,
                "canonical form over its bound");

    if (m) {
        fuzz_meaning(&b, m);
    }

    ngx_http_influencers_validate_body_free(&b);

    return n;
}


/* the reference: jansson's strict parse and the contract's rules */

static int
fuzz_oracle(const uint8_t *data, size_t size)
{
    int           ok;
    size_t        chars;
    json_t       *root, *v;
    const char   *key, *s;
    json_error_t  err;

    if (size == 0) {
        return 1;
    }

    if (size >= 3 && data[0] == 0xef && data[1] == 0xbb && data[2] == 0xbf) {
        return 0;
    }

    root = json_loadb((const char *) data, size,
                      JSON_DECODE_ANY|JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        return 0;
    }

    ok = json_is_object(root);

    json_object_foreach(root, key, v) {
        if (!json_is_string(v)) {
            ok = 0;
            break;
        }

        s = json_string_value(v);

        if (strcmp(key, "gender") == 0) {
            ok = ok && (strcmp(s, "male") == 0 || strcmp(s, "female") == 0
                        || strcmp(s, "non_binary") == 0);

        } else if (strcmp(key, "ageRange") == 0) {
            ok = ok && (strcmp(s, "teen") == 0 || strcmp(s, "young_adult") == 0
                        || strcmp(s, "adult") == 0
                        || strcmp(s, "mid_adult") == 0
                        || strcmp(s, "mature") == 0
                        || strcmp(s, "senior") == 0);

        } else if (strcmp(key, "prompt") == 0) {
            chars = fuzz_chars((const u_char *) s, json_string_length(v));
            ok = ok && chars >= 1
                 && chars <= NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS;

        } else {
            ok = 0;
        }
    }

    json_decref(root);

    return ok;
}


/* a refusal as partners see it: {"formErrors":[...],"fieldErrors":{...}} */

static void
fuzz_check_errors(json_t *errors)
{
    char        *dump;
    size_t       i;
    json_t      *form, *fields, *list, *m;
    const char  *key;

    fuzz_assert(json_is_object(errors) && json_object_size(errors) == 2,
                "errors not an object of two");

    form = json_object_get(errors, "formErrors");
    fields = json_object_get(errors, "fieldErrors");

    fuzz_assert(json_is_array(form) && json_is_object(fields),
                "errors of the wrong shape");
    fuzz_assert(json_array_size(form) + json_object_size(fields) > 0,
                "a refusal without a reason");

    json_array_foreach(form, i, m) {
        fuzz_assert(json_is_string(m), "a form error not a string");
    }

    json_object_foreach(fields, key, list) {
        fuzz_assert(json_is_array(list) && json_array_size(list) > 0,
                    "a field without messages");

        json_array_foreach(list, i, m) {
            fuzz_assert(json_is_string(m), "a field error not a string");
        }
    }

    dump = json_dumps(errors, JSON_COMPACT);
    fuzz_assert(dump != NULL, "errors cannot be written");
    free(dump);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                           rc, round;
    size_t                        i, n, m;
    u_char                       *canonical, *other, *text;
    json_t                       *a, *b2;
    uint64_t                      h;
    fuzz_meaning_t                meaning, changed, again;
    ngx_http_influencers_body_t   b;

    rc = ngx_http_influencers_validate_body_parse(&b, data, size);

    fuzz_assert(rc == 0 || rc == 1, "out of memory or a strange answer");
    fuzz_assert((rc == 0) == fuzz_oracle(data, size),
                rc == 0 ? "accepted what the reference refuses"
                        : "refused what the reference accepts");

    if (rc == 1) {
        fuzz_check_errors(b.errors);
        ngx_http_influencers_validate_body_free(&b);
        return 0;
    }

    fuzz_assert(b.errors == NULL, "accepted with errors");
    fuzz_assert(b.gender < 4 && b.age_range < 7, "an enum out of range");

    /* exactly the room promised: ASan sees one byte more */

    canonical = malloc(NGX_HTTP_INFLUENCERS_CANONICAL_MAX);
    other = malloc(NGX_HTTP_INFLUENCERS_CANONICAL_MAX);
    text = malloc(FUZZ_TEXT_MAX);

    fuzz_assert(canonical && other && text, "out of memory");

    n = ngx_http_influencers_validate_body_canonical(&b, canonical);
    fuzz_assert(n <= NGX_HTTP_INFLUENCERS_CANONICAL_MAX,
                "canonical form over its bound");

    /* it means what the body means */

    a = json_loadb((const char *) canonical, n, 0, NULL);
    b2 = b.root ? json_incref(b.root) : json_object();

    fuzz_assert(a != NULL, "the canonical form is not JSON");
    fuzz_assert(json_equal(a, b2), "the canonical form means otherwise");

    json_decref(a);
    json_decref(b2);

    fuzz_meaning(&b, &meaning);
    ngx_http_influencers_validate_body_free(&b);

    /* it is accepted, the same fields, and its own canonical form */

    m = fuzz_canonical_of(canonical, n, other, &again);
    fuzz_assert(fuzz_same_meaning(&meaning, &again),
                "the canonical form parses to other fields");
    fuzz_assert(m == n && memcmp(canonical, other, n) == 0,
                "the canonical form is not its own");

    for (h = 0xcbf29ce484222325ULL, i = 0; i < size; i++) {
        h = (h ^ data[i]) * 0x100000001b3ULL;
    }

    fuzz_rng = h;

    for (round = 0; round < 4; round++) {

        /* the same meaning written otherwise */

        m = fuzz_serialize(&meaning, text, FUZZ_TEXT_MAX);
        m = fuzz_canonical_of(text, m, other, NULL);

        if (m != n || memcmp(canonical, other, n) != 0) {
            fprintf(stderr, "canonical: %.*s\nrewritten: %.*s\n", (int) n,
                    canonical, (int) m, other);
        }

        fuzz_assert(m == n && memcmp(canonical, other, n) == 0,
                    "the same meaning, another canonical form");

        /* another meaning */

        changed = meaning;
        fuzz_change(&changed);

        m = fuzz_serialize(&changed, text, FUZZ_TEXT_MAX);
        m = fuzz_canonical_of(text, m, other, &again);

        fuzz_assert(fuzz_same_meaning(&changed, &again),
                    "a rewritten body parses to other fields");
        fuzz_assert(fuzz_same_meaning(&changed, &meaning)
                    == (m == n && memcmp(canonical, other, n) == 0),
                    "another meaning, the same canonical form");
    }

    free(canonical);
    free(other);
    free(text);

    return 0;
}
