
/*
 * Copyright (C) The influencers module authors.
 *
 * libFuzzer harness: the parsers of request headers and of the path,
 * ngx_http_influencers_validate.c's, each fed every input and each checked
 * against a plain reference written from the contract:
 *
 *   Idempotency-Key   a token of 1-255 visible ASCII characters, or an
 *                     RFC 8941 string of them (\" and \\ only), never more
 *                     than 255 bytes written; a quoted key reads back as
 *                     what it quotes;
 *   Authorization     "Bearer", any case, spaces, a key of visible ASCII;
 *   Content-Type      application/json, parameters, charset utf-8 only,
 *                     case-insensitive throughout;
 *   projectId         8-4-4-4-12 hex digits, written back in lower case;
 *   scopes            a comma- or space-separated list.
 *
 * A broken property aborts, which libFuzzer reports as a crash.
 */


#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ngx_http_influencers_validate.h"


#define fuzz_assert(cond, what)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_headers: %s (%s:%d)\n", what, __FILE__,      \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)


static int
fuzz_visible(u_char c)
{
    return c >= 0x21 && c <= 0x7e;
}


static void
fuzz_idempotency_key(const u_char *p, size_t len)
{
    u_char   *out, *again, *quoted;
    size_t    i, n;
    ssize_t   rc, rc2;

    /* exactly the room the contract allows: ASan sees a byte more */

    out = malloc(NGX_HTTP_INFLUENCERS_IDEM_MAX);
    again = malloc(NGX_HTTP_INFLUENCERS_IDEM_MAX);
    quoted = malloc(2 * NGX_HTTP_INFLUENCERS_IDEM_MAX + 2);
    fuzz_assert(out && again && quoted, "out of memory");

    rc = ngx_http_influencers_validate_parse_idempotency_key(p, len, out);

    fuzz_assert(rc == -1 || (rc >= 1 && rc <= NGX_HTTP_INFLUENCERS_IDEM_MAX),
                "a key of an impossible length");

    if (len && p[0] != '"') {

        /* a token: taken as it is, or refused */

        for (i = 0; i < len && fuzz_visible(p[i]); i++) { /* void */ }

        fuzz_assert((rc != -1)
                    == (i == len && len <= NGX_HTTP_INFLUENCERS_IDEM_MAX),
                    "a token judged wrong");
        fuzz_assert(rc == -1 || (rc == (ssize_t) len
                                 && memcmp(out, p, len) == 0),
                    "a token not taken as it is");
    }

    if (rc > 0) {
        for (i = 0; i < (size_t) rc; i++) {
            fuzz_assert(fuzz_visible(out[i]), "a key with an invisible byte");
        }

        /*
         * The one way to quote a key: only '"' and '\' escaped.  An
         * accepted quoted header is exactly that, and any key quoted so
         * reads back the same.
         */

        n = 0;
        quoted[n++] = '"';

        for (i = 0; i < (size_t) rc; i++) {
            if (out[i] == '"' || out[i] == '\\') {
                quoted[n++] = '\\';
            }

            quoted[n++] = out[i];
        }

        quoted[n++] = '"';

        if (p[0] == '"') {
            fuzz_assert(n == len && memcmp(quoted, p, len) == 0,
                        "a quoted key read as something else");
        }

        rc2 = ngx_http_influencers_validate_parse_idempotency_key(quoted, n, again);
        fuzz_assert(rc2 == rc && memcmp(again, out, rc) == 0,
                    "a key quoted reads otherwise");
    }

    free(out);
    free(again);
    free(quoted);
}


static void
fuzz_bearer(const u_char *p, size_t len)
{
    int            rc;
    size_t         i, key_len;
    const u_char  *key;

    key = NULL;
    key_len = 0;

    rc = ngx_http_influencers_validate_parse_bearer(p, len, &key, &key_len);

    /* the reference: "bearer" in any case, spaces, visible ASCII to the end */

    i = 7;

    if (len >= 7 && strncasecmp((const char *) p, "bearer ", 7) == 0) {
        while (i < len && p[i] == ' ') {
            i++;
        }
    }

    if (len < 8 || strncasecmp((const char *) p, "bearer ", 7) != 0
        || i == len)
    {
        fuzz_assert(rc == -1, "a bearer without a key taken");
        return;
    }

    for (key_len = 0; i + key_len < len && fuzz_visible(p[i + key_len]);
         key_len++)
    { /* void */ }

    if (i + key_len != len) {
        fuzz_assert(rc == -1, "a bearer key with an invisible byte taken");
        return;
    }

    fuzz_assert(rc == 0, "a good bearer refused");
    fuzz_assert(key == p + i && p + len == key + key_len,
                "the bearer key is not the rest of the header");
}


static void
fuzz_content_type(const u_char *p, size_t len)
{
    int      rc, lower, upper;
    size_t   i;
    u_char  *q;

    rc = ngx_http_influencers_validate_check_content_type(p, len);
    fuzz_assert(rc == 0 || rc == -1, "a strange answer");

    if (rc == 0) {
        fuzz_assert(len >= 16 && strncasecmp((const char *) p,
                                             "application/json", 16) == 0,
                    "a type other than application/json taken");
    }

    /* case never matters: the same answer in upper and in lower case */

    q = malloc(len + 1);
    fuzz_assert(q != NULL, "out of memory");

    for (i = 0; i < len; i++) {
        q[i] = (u_char) tolower(p[i]);
    }

    lower = ngx_http_influencers_validate_check_content_type(q, len);

    for (i = 0; i < len; i++) {
        q[i] = (u_char) toupper(p[i]);
    }

    upper = ngx_http_influencers_validate_check_content_type(q, len);

    fuzz_assert(rc == lower && rc == upper, "the answer depends on case");

    /* a charset other than utf-8 is never taken */

    if (rc == 0) {
        free(q);
        q = malloc(len + sizeof("; charset=latin1"));
        fuzz_assert(q != NULL, "out of memory");

        memcpy(q, p, len);
        memcpy(q + len, "; charset=latin1", sizeof("; charset=latin1") - 1);

        fuzz_assert(ngx_http_influencers_validate_check_content_type(q,
                            len + sizeof("; charset=latin1") - 1) == -1,
                    "charset=latin1 taken");
    }

    free(q);
}


static void
fuzz_uuid(const u_char *p, size_t len)
{
    int     rc, ok;
    size_t  i;
    u_char  id[16], text[NGX_HTTP_INFLUENCERS_UUID_LEN];

    rc = ngx_http_influencers_validate_parse_uuid(p, len, id);

    ok = (len == NGX_HTTP_INFLUENCERS_UUID_LEN);

    for (i = 0; ok && i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            ok = (p[i] == '-');

        } else {
            ok = (isxdigit(p[i]) != 0);
        }
    }

    fuzz_assert((rc == 0) == ok, "a UUID judged wrong");

    if (rc == 0) {
        ngx_http_influencers_validate_format_uuid(id, text);

        for (i = 0; i < len; i++) {
            fuzz_assert(text[i] == tolower(p[i]),
                        "a UUID written back otherwise");
        }
    }
}


static void
fuzz_scopes(const u_char *p, size_t len)
{
    int            found;
    size_t         i, start, n;
    static const   char  scope[] = "influencers:write";

    found = 0;

    for (i = 0; i < len; i = start + n) {
        for (start = i; start < len && (p[start] == ' ' || p[start] == ',');
             start++)
        { /* void */ }

        for (n = 0; start + n < len && p[start + n] != ' '
                    && p[start + n] != ','; n++)
        { /* void */ }

        if (n == sizeof(scope) - 1 && memcmp(p + start, scope, n) == 0) {
            found = 1;
        }

        if (start + n == len) {
            break;
        }
    }

    fuzz_assert(ngx_http_influencers_validate_has_scope(p, len, scope,
                                               sizeof(scope) - 1)
                == found, "a scope list judged wrong");
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *p;

    /* a copy of exactly the header's size: ASan sees a byte read past it */

    p = malloc(size ? size : 1);
    fuzz_assert(p != NULL, "out of memory");

    memcpy(p, data, size);

    fuzz_idempotency_key(p, size);
    fuzz_bearer(p, size);
    fuzz_content_type(p, size);
    fuzz_uuid(p, size);
    fuzz_scopes(p, size);

    free(p);

    return 0;
}
