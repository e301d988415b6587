
/*
 * Unit tests of src/common/ngx_http_influencers_validate.c: the parsers
 * that see partners' bytes first.  Built with ASan and UBSan by `make
 * test-unit`.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_influencers_validate.h"
#include "ngx_http_influencers_json.h"
#include "ngx_http_influencers_siphash.h"
#include "ngx_http_influencers_crc16.h"


static int  passed, failed;


#define CHECK(cond, name)                                                     \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            printf("not ok - %s (%s:%d)\n", name, __FILE__, __LINE__);        \
        }                                                                     \
    } while (0)


#define S(s)  (const u_char *) (s), sizeof(s) - 1

/* the parsers' names, short enough for a CHECK on one line */
#define v_parse_key          ngx_http_influencers_validate_parse_idempotency_key
#define v_body_free          ngx_http_influencers_validate_body_free
#define v_content_type       ngx_http_influencers_validate_check_content_type
#define v_parse_bearer       ngx_http_influencers_validate_parse_bearer
#define v_parse_uuid         ngx_http_influencers_validate_parse_uuid
#define v_has_scope          ngx_http_influencers_validate_has_scope
#define v_body_canonical     ngx_http_influencers_validate_body_canonical
#define v_format_uuid        ngx_http_influencers_validate_format_uuid
#define v_body_parse         ngx_http_influencers_validate_body_parse
#define v_body_errors_len    ngx_http_influencers_validate_body_errors_len
#define v_body_errors        ngx_http_influencers_validate_body_errors
#define v_body_check         ngx_http_influencers_validate_body_check


/*
 * What the module answers for a body, written by the module's writer
 * (v_body_errors() after v_body_check(),
 * jansson not involved), checked to be byte for byte jansson's compact dump
 * of the same problems, of the room it said it needs.
 */

static void
writer_matches(const char *text, size_t len, int rc, const char *dump)
{
    int                          rc2;
    size_t                       room;
    u_char                      *out, *end;
    ngx_http_influencers_body_t  b;

    rc2 = v_body_check(&b, (const u_char *) text, len);

    CHECK(rc2 == rc, "body_check() answers as body_parse()");

    if (rc2 == 1) {
        room = v_body_errors_len(&b);
        out = malloc(room);
        end = v_body_errors(&b, out);

        CHECK((size_t) (end - out) <= room
              && strlen(dump) == (size_t) (end - out)
              && memcmp(out, dump, end - out) == 0,
              "the writer's details are jansson's, byte for byte");

        if (strlen(dump) != (size_t) (end - out)
            || memcmp(out, dump, end - out) != 0)
        {
            printf("#   writer:  %.*s\n#   jansson: %s\n",
                   (int) (end - out), out, dump);
        }

        free(out);
    }

    v_body_free(&b);
}


/* the body's errors as compact JSON, or "" when valid */

static const char *
body(const char *text, size_t len, ngx_http_influencers_body_t *b)
{
    static char  buf[65536];
    char        *dump;
    int          rc;

    rc = v_body_parse(b, (const u_char *) text, len);

    buf[0] = '\0';

    if (rc == 1) {
        dump = json_dumps(b->errors, JSON_COMPACT);
        snprintf(buf, sizeof(buf), "%s", dump);
        writer_matches(text, len, rc, dump);
        free(dump);

    } else if (rc != 0) {
        snprintf(buf, sizeof(buf), "rc=%d", rc);

    } else {
        writer_matches(text, len, rc, "");
    }

    return buf;
}


#define BODY_IS(text, expected, name)                                         \
    do {                                                                      \
        ngx_http_influencers_body_t  b;                                       \
        const char *got = body(text, sizeof(text) - 1, &b);                   \
        CHECK(strcmp(got, expected) == 0, name);                              \
        if (strcmp(got, expected) != 0) {                                     \
            printf("#   got:      %s\n#   expected: %s\n", got, expected);    \
        }                                                                     \
        v_body_free(&b);                                                      \
    } while (0)


static void
test_uuid(void)
{
    u_char  id[16], out[36];

    CHECK(v_parse_uuid(
              S("3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d"), id) == 0,
          "uuid lowercase");
    v_format_uuid(id, out);
    CHECK(memcmp(out, "3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d", 36) == 0,
          "uuid round trip");

    CHECK(v_parse_uuid(
              S("3F0C2B9E-8D1A-4C2E-9B7A-1E2F3A4B5C6D"), id) == 0,
          "uuid uppercase");
    v_format_uuid(id, out);
    CHECK(memcmp(out, "3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6d", 36) == 0,
          "uuid emitted lowercase");

    CHECK(v_parse_uuid(
              S("3f0c2b9e8d1a-4c2e-9b7a-1e2f3a4b5c6d0"), id) == -1,
          "uuid dash misplaced");
    CHECK(v_parse_uuid(
              S("3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6g"), id) == -1,
          "uuid non-hex");
    CHECK(v_parse_uuid(
              S("3f0c2b9e-8d1a-4c2e-9b7a-1e2f3a4b5c6"), id) == -1,
          "uuid short");
    CHECK(v_parse_uuid(S(""), id) == -1, "uuid empty");
}


static void
test_idempotency_key(void)
{
    u_char   out[600], big[300];
    ssize_t  n;

    n = v_parse_key(S("abc"), out);
    CHECK(n == 3 && memcmp(out, "abc", 3) == 0, "key token");

    n = v_parse_key(S("\"abc\""), out);
    CHECK(n == 3 && memcmp(out, "abc", 3) == 0, "key sf-string");

    n = v_parse_key(S("\"a\\\"b\\\\c\""), out);
    CHECK(n == 5 && memcmp(out, "a\"b\\c", 5) == 0, "key sf-string escapes");

    CHECK(v_parse_key(S("\"\""), out) == -1,
          "key empty sf-string");
    CHECK(v_parse_key(S("\"a b\""), out) == -1,
          "key sf-string with a space");
    CHECK(v_parse_key(S("\"abc"), out) == -1,
          "key unterminated sf-string");
    CHECK(v_parse_key(S("\"a\"b\""), out)
          == -1, "key sf-string with a bare quote");
    CHECK(v_parse_key(S("\"a\\x\""), out)
          == -1, "key sf-string with a bad escape");
    CHECK(v_parse_key(S("a b"), out) == -1,
          "key with a space");
    CHECK(v_parse_key(S("a\x7f"), out) == -1,
          "key with DEL");
    CHECK(v_parse_key(S("caf\xc3\xa9"), out)
          == -1, "key with non-ASCII");
    CHECK(v_parse_key(S(""), out) == -1,
          "key empty");

    memset(big, 'k', sizeof(big));
    CHECK(v_parse_key(big, 255, out) == 255,
          "key of 255");
    CHECK(v_parse_key(big, 256, out) == -1,
          "key of 256");

    big[0] = '"';
    big[256] = '"';
    CHECK(v_parse_key(big, 257, out) == 255,
          "sf-string of 255");
    big[257] = '"';
    CHECK(v_parse_key(big, 258, out) == -1,
          "sf-string of 256");

    /* the output buffer is exactly as large as the longest key */
    {
        u_char  *exact, in[520];

        exact = malloc(NGX_HTTP_INFLUENCERS_IDEM_MAX);
        memset(in, 'k', sizeof(in));
        in[0] = '"';
        in[sizeof(in) - 1] = '"';

        CHECK(v_parse_key(in, sizeof(in),
                                                         exact) == -1,
              "a long sf-string never writes past 255 bytes");
        CHECK(v_parse_key(in + 1, 255, exact)
              == 255, "a token of 255 fills the buffer");
        free(exact);
    }
}


static void
test_headers(void)
{
    const u_char  *key;
    size_t         len;

    CHECK(v_parse_bearer(S("Bearer abc"), &key, &len) == 0
          && len == 3 && memcmp(key, "abc", 3) == 0, "bearer");
    CHECK(v_parse_bearer(S("bEaReR   abc"), &key, &len)
          == 0 && len == 3, "bearer case and spaces");
    CHECK(v_parse_bearer(S("Bearer"), &key, &len) == -1,
          "bearer without key");
    CHECK(v_parse_bearer(S("Bearer    "), &key, &len)
          == -1, "bearer with spaces only");
    CHECK(v_parse_bearer(S("Basic abc"), &key, &len)
          == -1, "basic");
    CHECK(v_parse_bearer(S("Bearerabc"), &key, &len)
          == -1, "bearer glued");
    CHECK(v_parse_bearer(S("Bearer a b"), &key, &len)
          == -1, "bearer key with a space");

    CHECK(v_content_type(S("application/json"))
          == 0, "json");
    CHECK(v_content_type(S("Application/JSON"))
          == 0, "json case");
    CHECK(v_content_type(
              S("application/json; charset=utf-8")) == 0, "charset utf-8");
    CHECK(v_content_type(
              S("application/json;charset=\"UTF-8\"")) == 0,
          "charset quoted");
    CHECK(v_content_type(
              S("application/json; charset=latin1")) == -1, "charset latin1");
    CHECK(v_content_type(
              S("application/json; foo=bar")) == 0, "other parameter");
    CHECK(v_content_type(S("application/jsonx"))
          == -1, "jsonx");
    CHECK(v_content_type(S("text/plain")) == -1,
          "text/plain");
    CHECK(v_content_type(
              S("application/json; charset")) == -1, "parameter without =");

    CHECK(v_has_scope(S("a influencers:write b"),
                                         "influencers:write", 17) == 1,
          "scope in spaces");
    CHECK(v_has_scope(S("a,influencers:write"),
                                         "influencers:write", 17) == 1,
          "scope in commas");
    CHECK(v_has_scope(S("influencers:writer"),
                                         "influencers:write", 17) == 0,
          "scope prefix");
    CHECK(v_has_scope(S(""), "influencers:write", 17)
          == 0, "no scope");
}


static void
test_body(void)
{
    ngx_http_influencers_body_t  b;
    const char                  *e;
    static const char            valid[] =
        "{\"gender\":\"male\",\"ageRange\":\"senior\",\"prompt\":\"x\"}";

    e = body("", 0, &b);
    CHECK(*e == '\0' && b.root == NULL && b.gender == 0, "empty body");
    v_body_free(&b);

    e = body(valid, strlen(valid), &b);
    CHECK(*e == '\0' && b.gender == NGX_HTTP_INFLUENCERS_GENDER_MALE
          && b.age_range == 6 && b.prompt_len == 1, "valid body");
    v_body_free(&b);

    BODY_IS("{}", "", "{}");
    BODY_IS(" { } ", "", "{} with whitespace");
    BODY_IS(" ", "{\"formErrors\":[\"Invalid JSON.\"],\"fieldErrors\":{}}",
            "whitespace only");
    BODY_IS("{\"gender\":", "{\"formErrors\":[\"Invalid JSON.\"],"
            "\"fieldErrors\":{}}", "truncated");
    BODY_IS("[]", "{\"formErrors\":[\"Expected object, received array\"],"
            "\"fieldErrors\":{}}", "array");
    BODY_IS("\"x\"", "{\"formErrors\":[\"Expected object, received string\"],"
            "\"fieldErrors\":{}}", "string");
    BODY_IS("null", "{\"formErrors\":[\"Expected object, received null\"],"
            "\"fieldErrors\":{}}", "null");
    BODY_IS("\xef\xbb\xbf{}", "{\"formErrors\":[\"Byte-order mark is not "
            "allowed.\"],\"fieldErrors\":{}}", "BOM");
    BODY_IS("{\"prompt\":\"\xff\"}", "{\"formErrors\":[\"Invalid UTF-8.\"],"
            "\"fieldErrors\":{}}", "invalid UTF-8");
    BODY_IS("{\"prompt\":\"\\ud800\"}", "{\"formErrors\":[\"Invalid Unicode "
            "escape.\"],\"fieldErrors\":{}}", "lone surrogate");
    BODY_IS("{\"prompt\":\"\\u0000\"}", "{\"formErrors\":[\"Invalid JSON.\"],"
            "\"fieldErrors\":{}}", "NUL escape");

    BODY_IS("{\"name\":\"x\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"name\":[\"Unrecognized key \xe2\x80\x94 name is "
            "server-generated.\"]}}", "name");
    BODY_IS("{\"n\\u0061me\":\"x\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"name\":[\"Unrecognized key \xe2\x80\x94 name is "
            "server-generated.\"]}}", "escaped name");
    BODY_IS("{\"brandVoice\":1,\"language\":\"en\"}",
            "{\"formErrors\":[],\"fieldErrors\":{\"brandVoice\":"
            "[\"Unrecognized key \xe2\x80\x94 brandVoice is inherited from "
            "the project; override it with PATCH /v1/influencers/:id.\"],"
            "\"language\":[\"Unrecognized key \xe2\x80\x94 language is "
            "inherited from the project; override it with PATCH "
            "/v1/influencers/:id.\"]}}", "brandVoice and language");
    BODY_IS("{\"gender\":null}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"gender\":[\"Expected string, received null\"]}}",
            "gender null");
    BODY_IS("{\"ageRange\":\"kid\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"ageRange\":[\"Invalid enum value. Expected 'teen' | "
            "'young_adult' | 'adult' | 'mid_adult' | 'mature' | "
            "'senior'\"]}}", "ageRange enum");
    BODY_IS("{\"gender\":\"Male\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"gender\":[\"Invalid enum value. Expected 'male' | 'female' "
            "| 'non_binary'\"]}}", "gender enum is case-sensitive");
    BODY_IS("{\"prompt\":\"\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"prompt\":[\"String must contain at least 1 character(s)\"]}}",
            "prompt empty");
    BODY_IS("{\"prompt\":\"123456789012345678901234567890123456789012345678"
            "901234567890\"}", "", "prompt of 60");
    BODY_IS("{\"prompt\":\"123456789012345678901234567890123456789012345678"
            "9012345678901\"}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"prompt\":[\"String must contain at most 60 character(s)\"]}}",
            "prompt of 61");
    BODY_IS("{\"prompt\":\"\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95\xe2\x98\x95"
            "\xe2\x98\x95\"}", "", "prompt of 60 code points in 180 bytes");
    BODY_IS("{\"gender\":\"male\",\"gender\":\"male\"}",
            "{\"formErrors\":[],\"fieldErrors\":{\"gender\":"
            "[\"Duplicate key.\"]}}", "duplicate");
    BODY_IS("{\"gender\":\"male\",\"gend\\u0065r\":\"female\"}",
            "{\"formErrors\":[],\"fieldErrors\":{\"gender\":"
            "[\"Duplicate key.\"]}}", "duplicate after unescaping");
    BODY_IS("{\"a\":{\"b\":[1,\"}\"]},\"a\":2,\"a\":3}",
            "{\"formErrors\":[],\"fieldErrors\":{\"a\":[\"Duplicate key.\","
            "\"Unrecognized key.\"]}}", "nested values skipped, one report");
    BODY_IS("{\"name\":\"n\",\"gender\":\"x\",\"prompt\":7,\"extra\":true}",
            "{\"formErrors\":[],\"fieldErrors\":{\"name\":[\"Unrecognized "
            "key \xe2\x80\x94 name is server-generated.\"],\"gender\":"
            "[\"Invalid enum value. Expected 'male' | 'female' | "
            "'non_binary'\"],\"prompt\":[\"Expected string, received "
            "number\"],\"extra\":[\"Unrecognized key.\"]}}",
            "every problem reported");
}


/*
 * Valid JSON with numbers jansson cannot hold (RFC 8259 sets no bound):
 * each body gets exactly the errors of the same body with a small number
 * in their place, never "Invalid JSON." for that reason.
 */

#define BODY_LIKE(text, like, name)                                           \
    do {                                                                      \
        ngx_http_influencers_body_t  b1, b2;                                  \
        char                         got[4096];                               \
        const char                  *want;                                    \
        snprintf(got, sizeof(got), "%s",                                      \
                 body(text, sizeof(text) - 1, &b1));                          \
        want = body(like, sizeof(like) - 1, &b2);                             \
        CHECK(strcmp(got, want) == 0 && strstr(got, "rc=") == NULL, name);    \
        if (strcmp(got, want) != 0) {                                         \
            printf("#   got:      %s\n#   expected: %s\n", got, want);        \
        }                                                                     \
        v_body_free(&b1);                                                     \
        v_body_free(&b2);                                                     \
    } while (0)


static void
test_big_numbers(void)
{
    char                         buf[4200];
    size_t                       i, len;
    const char                  *e;
    ngx_http_influencers_body_t  b;

    BODY_IS("{\"prompt\":1e999}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"prompt\":[\"Expected string, received number\"]}}",
            "1e999 as prompt: the type error");
    BODY_IS("1e999", "{\"formErrors\":[\"Expected object, received "
            "number\"],\"fieldErrors\":{}}", "1e999 alone: not an object");
    BODY_IS("{\"foo\":1e999}", "{\"formErrors\":[],\"fieldErrors\":"
            "{\"foo\":[\"Unrecognized key.\"]}}",
            "1e999 under an unknown key: the unknown key only");

    BODY_LIKE("{\"prompt\":1e999}", "{\"prompt\":60}", "1e999");
    BODY_LIKE("{\"prompt\":-1e999}", "{\"prompt\":60}", "-1e999");
    BODY_LIKE("{\"prompt\":1E+999}", "{\"prompt\":60}", "1E+999");
    BODY_LIKE("{\"prompt\":1.7976931348623159e308}", "{\"prompt\":60}",
              "just past the largest double");
    BODY_LIKE("{\"prompt\":1e-999}", "{\"prompt\":60}",
              "1e-999 (jansson reads it as 0)");
    BODY_LIKE("{\"gender\":123456789012345678901234567890}",
              "{\"gender\":60}", "a 30-digit integer");
    BODY_LIKE("{\"ageRange\":-123456789012345678901234567890}",
              "{\"ageRange\":60}", "a 30-digit negative integer");
    BODY_LIKE("{\"prompt\":9223372036854775808}", "{\"prompt\":60}",
              "2^63");
    BODY_LIKE("{\"prompt\":-9223372036854775809}", "{\"prompt\":60}",
              "-2^63 - 1");
    BODY_LIKE("{\"prompt\":[1,{\"a\":[1e999]},-1e999]}",
              "{\"prompt\":[1,{\"a\":[1]},1]}", "nested in a field");
    BODY_LIKE("{\"x\":{\"y\":1e999},\"z\":[2e999,3e999]}",
              "{\"x\":{\"y\":1},\"z\":[2,3]}", "nested under unknown keys");
    BODY_LIKE("[1e999]", "[1]", "in a top-level array");
    BODY_LIKE("-1e999", "60", "-1e999 alone");
    BODY_LIKE(" 123456789012345678901234567890 ", " 60 ",
              "a 30-digit integer alone");
    BODY_LIKE("{\"prompt\" : 1e999 , \"gender\":\"x\"}",
              "{\"prompt\" : 60 , \"gender\":\"x\"}",
              "whitespace around, and another error after it");
    BODY_LIKE("{\"name\":1,\"prompt\":1e999,\"ageRange\":2e999,"
              "\"gender\":\"robot\",\"prompt\":\"\"}",
              "{\"name\":1,\"prompt\":60,\"ageRange\":60,"
              "\"gender\":\"robot\",\"prompt\":\"\"}",
              "every other problem still reported");
    BODY_LIKE("{\"prompt\":\"1e999\",\"gender\":1e999}",
              "{\"prompt\":\"1e999\",\"gender\":60}",
              "a string that looks like a number is left alone");
    BODY_LIKE("{\"k\\\"1e999\":1e999}", "{\"k\\\"1e999\":1}",
              "an escaped quote in a key");

    /* bodies that are not JSON stay so, whatever their numbers */
    BODY_LIKE("{\"prompt\":1e999", "{\"prompt\":1", "unterminated");
    BODY_LIKE("[1e999x]", "[1x]", "a letter after the number");
    BODY_LIKE("[1e999-3]", "[1-3]", "two numbers glued");
    BODY_LIKE("[1e999 2]", "[1 2]", "two numbers apart");
    BODY_LIKE("{\"a\" 1e999}", "{\"a\" 1}", "a missing colon");
    BODY_LIKE("[01e999]", "[01]", "a leading zero");
    BODY_LIKE("[1e999,1.]", "[1,1.]", "a number without digits after '.'");
    BODY_LIKE("[1e999,1e]", "[1,1e]", "an exponent without digits");
    BODY_LIKE("[1e999,-]", "[1,-]", "a lone minus");
    BODY_LIKE("[1e999,\"\xff\"]", "[1,\"\xff\"]", "invalid UTF-8 after it");
    BODY_LIKE("[1e999,\"\\ud800\"]", "[1,\"\\ud800\"]",
              "a lone surrogate after it");

    BODY_IS("[1e999x]", "{\"formErrors\":[\"Invalid JSON.\"],"
            "\"fieldErrors\":{}}", "1e999x: Invalid JSON.");

    /* as many as fit in 4k: one more parse, not one per number */

    len = 0;
    buf[len++] = '{';

    for (i = 0; len < 4000; i++) {
        len += snprintf(buf + len, sizeof(buf) - len, "%s\"k%zu\":%s",
                        i ? "," : "", i, (i & 1) ? "-1e999" : "9e999");
    }

    buf[len++] = '}';

    e = body(buf, len, &b);
    CHECK(strncmp(e, "{\"formErrors\":[],\"fieldErrors\":{\"k0\":"
                     "[\"Unrecognized key.\"],", 50) == 0
          && json_object_size(json_object_get(b.errors, "fieldErrors")) == i,
          "4k of overflowing numbers: every key reported");
    v_body_free(&b);
}


/* {"x": and n arrays around 1: n + 1 levels */

static const char *
nested(char *buf, size_t n, ngx_http_influencers_body_t *b)
{
    size_t  i, len;

    len = 0;
    memcpy(buf, "{\"x\":", 5);
    len = 5;

    for (i = 0; i < n; i++) {
        buf[len++] = '[';
    }

    buf[len++] = '1';

    for (i = 0; i < n; i++) {
        buf[len++] = ']';
    }

    buf[len++] = '}';

    return body(buf, len, b);
}


static void
test_deep(void)
{
    char                         buf[4200];
    size_t                       i;
    const char                  *e;
    ngx_http_influencers_body_t  b;

    e = nested(buf, 32, &b);
    CHECK(strcmp(e, "{\"formErrors\":[\"Nesting too deep.\"],"
                    "\"fieldErrors\":{\"x\":[\"Unrecognized key.\"]}}") == 0,
          "33 levels");
    v_body_free(&b);

    e = nested(buf, 31, &b);
    CHECK(strcmp(e, "{\"formErrors\":[],"
                    "\"fieldErrors\":{\"x\":[\"Unrecognized key.\"]}}") == 0,
          "32 levels");
    v_body_free(&b);

    BODY_IS("{\"x\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}",
            "{\"formErrors\":[],\"fieldErrors\":"
            "{\"x\":[\"Unrecognized key.\"]}}", "brackets in a string");

    for (i = 0; i < 4100; i++) {
        buf[i] = '[';
    }

    e = body(buf, 4100, &b);
    CHECK(strcmp(e, "{\"formErrors\":[\"Nesting too deep.\"],"
                    "\"fieldErrors\":{}}") == 0, "too deep");
    v_body_free(&b);
}


/* the canonical form of a body: the bytes that fingerprints are made of */

static const char *
canonical(const char *text)
{
    static char                  buf[NGX_HTTP_INFLUENCERS_CANONICAL_MAX + 1];
    size_t                       n;
    ngx_http_influencers_body_t  b;

    if (v_body_parse(&b, (const u_char *) text,
                                        strlen(text))
        != 0)
    {
        v_body_free(&b);
        return "(invalid)";
    }

    n = v_body_canonical(&b, (u_char *) buf);
    buf[n] = '\0';

    v_body_free(&b);

    return buf;
}


#define CANONICAL_IS(text, expected, name)                                    \
    do {                                                                      \
        const char *got = canonical(text);                                    \
        CHECK(strcmp(got, expected) == 0, name);                              \
        if (strcmp(got, expected) != 0) {                                     \
            printf("#   got:      %s\n#   expected: %s\n", got, expected);    \
        }                                                                     \
    } while (0)


static void
test_canonical(void)
{
    int                          c;
    char                         text[512], expected[512], *p;
    size_t                       n;
    const char                  *got;
    u_char                       out[NGX_HTTP_INFLUENCERS_CANONICAL_MAX];
    u_char                       byte;
    ngx_http_influencers_body_t  b;

    /*
     * What nginx 1.22's ngx_escape_json() writes for each control, as the
     * fingerprints already stored were made: written out, not computed.
     */
    static const char  *controls[32] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003",
        "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b",     "\\t",     "\\n",     "\\u000B",
        "\\f",     "\\r",     "\\u000E", "\\u000F",
        "\\u0010", "\\u0011", "\\u0012", "\\u0013",
        "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001A", "\\u001B",
        "\\u001C", "\\u001D", "\\u001E", "\\u001F"
    };

    n = v_body_canonical(
            &(ngx_http_influencers_body_t) { 0 }, out);
    CHECK(n == 2 && memcmp(out, "{}", 2) == 0, "canonical: empty body");

    CANONICAL_IS("{}", "{}", "canonical: {}");
    CANONICAL_IS(" {\n\"prompt\" : \"x\" ,\t\"gender\":\"male\","
                 "\"ageRange\":\"senior\"}",
                 "{\"ageRange\":\"senior\",\"gender\":\"male\","
                 "\"prompt\":\"x\"}", "canonical: sorted, no whitespace");
    CANONICAL_IS("{\"gender\":\"non_binary\"}", "{\"gender\":\"non_binary\"}",
                 "canonical: one field");
    CANONICAL_IS("{\"prompt\":\"\\u0065\\/\\u00e9\\ud83d\\ude00\"}",
                 "{\"prompt\":\"e/\xc3\xa9\xf0\x9f\x98\x80\"}",
                 "canonical: escapes decoded, UTF-8 as it is");
    CANONICAL_IS("{\"prompt\":\"a\\\"b\\\\c\\u0001\\n\\u007f\\u001f\"}",
                 "{\"prompt\":\"a\\\"b\\\\c\\u0001\\n\x7f\\u001F\"}",
                 "canonical: escapes as ngx_escape_json()'s");

    /* every byte value, alone and in company */

    for (c = 0; c < 256; c++) {
        byte = (u_char) c;

        memset(&b, 0, sizeof(ngx_http_influencers_body_t));
        b.prompt = &byte;
        b.prompt_len = 1;

        n = v_body_canonical(&b, out);

        p = expected;
        p += sprintf(p, "{\"prompt\":\"");

        if (c < 0x20) {
            p += sprintf(p, "%s", controls[c]);

        } else if (c == '"' || c == '\\') {
            p += sprintf(p, "\\%c", c);

        } else {
            *p++ = (char) c;
        }

        p += sprintf(p, "\"}");

        if (n != (size_t) (p - expected) || memcmp(out, expected, n) != 0) {
            snprintf(text, sizeof(text), "canonical: byte 0x%02x", c);
            CHECK(0, text);
        }
    }

    CHECK(1, "canonical: every byte value");

    memset(&b, 0, sizeof(ngx_http_influencers_body_t));
    b.prompt = (const u_char *) "\x1f\"\xff\\\x80\x7f\x01";
    b.prompt_len = 7;
    b.gender = NGX_HTTP_INFLUENCERS_GENDER_FEMALE;
    n = v_body_canonical(&b, out);
    CHECK(n == sizeof("{\"gender\":\"female\",\"prompt\":\"\\u001F\\\"\xff"
                      "\\\\\x80\x7f\\u0001\"}") - 1
          && memcmp(out, "{\"gender\":\"female\",\"prompt\":\"\\u001F\\\"\xff"
                         "\\\\\x80\x7f\\u0001\"}", n) == 0,
          "canonical: bytes in company");

    /* the longest a valid body can make it */

    p = text;
    p += sprintf(p, "{\"gender\":\"non_binary\",\"ageRange\":\"young_adult\","
                    "\"prompt\":\"");
    for (c = 0; c < NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS; c++) {
        p += sprintf(p, "\\u0001");
    }
    p += sprintf(p, "\"}");

    got = canonical(text);
    CHECK(strlen(got) == sizeof("{\"ageRange\":\"young_adult\","
                                "\"gender\":\"non_binary\",\"prompt\":\"\"}")
                         - 1 + 6 * NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS
          && strlen(got) <= NGX_HTTP_INFLUENCERS_CANONICAL_MAX,
          "canonical: the longest");
}


/* the writer: what ngx_escape_json() writes, and the room it says */

#define ESCAPES_TO(in, out, name)                                             \
    do {                                                                      \
        u_char  buf_[256], *end_;                                             \
        end_ = ngx_http_influencers_json_str(buf_, (const u_char *) in,       \
                                             sizeof(in) - 1);                 \
        CHECK((size_t) (end_ - buf_) == sizeof(out) - 1                       \
              && memcmp(buf_, out, sizeof(out) - 1) == 0                      \
              && ngx_http_influencers_json_str_len((const u_char *) in,       \
                                                   sizeof(in) - 1)            \
                 == sizeof(out) - 1, name);                                   \
    } while (0)


static void
test_writer(void)
{
    int      c;
    char    *dump;
    u_char   in[1], buf[16], *end, *p;
    json_t  *j;
    size_t   bad;

    ESCAPES_TO("", "\"\"", "writer: empty");
    ESCAPES_TO("plain text", "\"plain text\"", "writer: plain");
    ESCAPES_TO("a\"b\\c", "\"a\\\"b\\\\c\"", "writer: quote, backslash");
    ESCAPES_TO("\b\t\n\f\r", "\"\\b\\t\\n\\f\\r\"",
               "writer: the named controls");
    ESCAPES_TO("\x01\x1f", "\"\\u0001\\u001F\"",
               "writer: other controls, upper-case hex");
    ESCAPES_TO("/\x7f", "\"/\x7f\"", "writer: slash and DEL as they are");
    ESCAPES_TO("caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80",
               "\"caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80\"",
               "writer: UTF-8 as it is");

    /* every ASCII byte but NUL, against jansson's compact dump */

    bad = 0;

    for (c = 1; c < 0x80; c++) {
        in[0] = (u_char) c;
        j = json_stringn((const char *) in, 1);
        dump = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        end = ngx_http_influencers_json_str(buf, in, 1);

        if (dump == NULL
            || strlen(dump) != (size_t) (end - buf)
            || memcmp(dump, buf, end - buf) != 0
            || ngx_http_influencers_json_str_len(in, 1)
               != (size_t) (end - buf))
        {
            bad++;
            printf("#   byte 0x%02x: writer %.*s, jansson %s\n", c,
                   (int) (end - buf), buf, dump ? dump : "(null)");
        }

        free(dump);
        json_decref(j);
    }

    CHECK(bad == 0, "writer: every ASCII byte escaped as jansson does");

    p = ngx_http_influencers_json_lit(buf, "{\"a\":");
    p = ngx_http_influencers_json_raw(p, "1}", 2);
    CHECK(p - buf == 7 && memcmp(buf, "{\"a\":1}", 7) == 0,
          "writer: literal and raw bytes");
}


/* problems grouped as jansson's objects grouped them (the old answers) */

static void
test_error_order(void)
{
    char                         deep[200];
    ngx_http_influencers_body_t  b;

    BODY_IS("{\"b\":1,\"a\":1,\"b\":2,\"a\":3,\"c\":true}",
            "{\"formErrors\":[],\"fieldErrors\":{\"b\":[\"Duplicate key.\","
            "\"Unrecognized key.\"],\"a\":[\"Duplicate key.\","
            "\"Unrecognized key.\"],\"c\":[\"Unrecognized key.\"]}}",
            "errors: each field's messages together, fields as first found");

    BODY_IS("{\"prompt\":\"\",\"prompt\":1,\"name\":null,\"gender\":\"x\","
            "\"gender\":\"y\",\"gender\":\"z\"}",
            "{\"formErrors\":[],\"fieldErrors\":{\"prompt\":"
            "[\"Duplicate key.\",\"Expected string, received number\"],"
            "\"gender\":[\"Duplicate key.\",\"Invalid enum value. "
            "Expected 'male' | 'female' | 'non_binary'\"],"
            "\"name\":[\"Unrecognized key \xe2\x80\x94 name is "
            "server-generated.\"]}}",
            "errors: a key three times is one duplicate");

    BODY_IS("{\"a\\\"b\\\\c\\n\\u0001\\u001f\\u007f/\xc3\xa9\":1,\"gender\":[],"
            "\"ageRange\":{},\"prompt\":true}",
            "{\"formErrors\":[],\"fieldErrors\":{\"a\\\"b\\\\c\\n\\u0001"
            "\\u001F\x7f/\xc3\xa9\":[\"Unrecognized key.\"],\"gender\":"
            "[\"Expected string, received array\"],\"ageRange\":[\"Expected "
            "string, received object\"],\"prompt\":[\"Expected string, "
            "received boolean\"]}}",
            "errors: a key that needs escaping, every type's message");

    BODY_IS("{\"gender\":\"male\",\"gender\":\"male\"}",
            "{\"formErrors\":[],\"fieldErrors\":{\"gender\":"
            "[\"Duplicate key.\"]}}", "errors: a valid field twice");

    snprintf(deep, sizeof(deep), "{\"name\":1,\"zzz\":%.*s1%.*s}",
             40, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             40, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    CHECK(strcmp(body(deep, strlen(deep), &b),
                 "{\"formErrors\":[\"Nesting too deep.\"],\"fieldErrors\":"
                 "{\"name\":[\"Unrecognized key \xe2\x80\x94 name is "
                 "server-generated.\"],\"zzz\":[\"Unrecognized key.\"]}}")
          == 0, "errors: a form error and field errors");
    v_body_free(&b);

    /* many fields: the grouping holds beyond a handful */
    {
        char    big[8192];
        size_t  i, len;

        len = 0;
        big[len++] = '{';

        for (i = 0; i < 300; i++) {
            len += snprintf(big + len, sizeof(big) - len, "%s\"k%zu\":%zu",
                            i ? "," : "", i % 150, i);
        }

        big[len++] = '}';

        (void) body(big, len, &b);
        CHECK(json_object_size(json_object_get(b.errors, "fieldErrors"))
              == 150, "errors: 150 fields each sent twice");
        v_body_free(&b);
    }
}


/*
 * The Cluster slot of a key against CRC16/XMODEM's check value and the
 * slots Redis's CLUSTER KEYSLOT answers (its documentation's keys), hash
 * tags included: the first "{", the first "}" after it, never empty.
 */

static void
test_key_slot(void)
{
#define SLOT(s)  ngx_http_influencers_key_slot((u_char *) s, sizeof(s) - 1)

    CHECK(ngx_http_influencers_crc16((u_char *) "123456789", 9) == 0x31c3,
          "crc16: the XMODEM check value");
    CHECK(SLOT("somekey") == 11058, "key slot: somekey");
    CHECK(SLOT("foo") == 12182, "key slot: foo");
    CHECK(SLOT("hello") == 866, "key slot: hello");
    CHECK(SLOT("foo{hash_tag}") == 2515, "key slot: a hash tag");
    CHECK(SLOT("{hash_tag}bar") == SLOT("hash_tag"),
          "key slot: the tag alone counts");
    CHECK(SLOT("{user1000}.following") == SLOT("{user1000}.followers"),
          "key slot: one tag, one slot");
    CHECK(SLOT("foo{}{bar}") == (ngx_http_influencers_crc16(
                                     (u_char *) "foo{}{bar}", 10) & 16383),
          "key slot: an empty tag is no tag");
    CHECK(SLOT("foo{{bar}}zap") == SLOT("{bar"),
          "key slot: the tag ends at the first }");
    CHECK(SLOT("foo{bar}{zap}") == SLOT("bar"),
          "key slot: the first tag only");
    CHECK(SLOT("{") == (ngx_http_influencers_crc16((u_char *) "{", 1)
                        & 16383),
          "key slot: no } is no tag");

#undef SLOT
}


/*
 * SipHash-2-4 against the reference vectors (key 00..0f, message 00..n-1),
 * and a message split after a prefix hashes as if whole.
 */

static void
test_siphash(void)
{
    size_t    i;
    uint64_t  whole;
    u_char    key[16], msg[64];

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (u_char) i;
    }

    for (i = 0; i < sizeof(msg); i++) {
        msg[i] = (u_char) i;
    }

    CHECK(ngx_http_influencers_siphash(key, NULL, 0, msg, 0)
          == 0x726fdb47dd0e0e31ULL, "siphash: the empty message");
    CHECK(ngx_http_influencers_siphash(key, NULL, 0, msg, 15)
          == 0xa129ca6149be45e5ULL, "siphash: the paper's 15 bytes");

    for (i = 0; i <= 40; i++) {
        whole = ngx_http_influencers_siphash(key, NULL, 0, msg, 24 + i);

        CHECK(ngx_http_influencers_siphash(key, msg, 8, msg + 8, 16 + i)
              == whole, "siphash: an 8-byte prefix");
        CHECK(ngx_http_influencers_siphash(key, msg, 24, msg + 24, i)
              == whole, "siphash: a 24-byte prefix");
    }

    key[0] ^= 1;
    CHECK(ngx_http_influencers_siphash(key, NULL, 0, msg, 15)
          != 0xa129ca6149be45e5ULL, "siphash: another key, another hash");
}


int
main(void)
{
    test_siphash();
    test_key_slot();
    test_writer();
    test_error_order();
    test_uuid();
    test_idempotency_key();
    test_headers();
    test_body();
    test_big_numbers();
    test_deep();
    test_canonical();

    printf("unit: %d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}
