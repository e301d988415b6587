
/*
 * Copyright (C) The influencers module authors.
 *
 * Parsing and validation of what a partner sends: the projectId, the
 * Authorization and Idempotency-Key headers, the Content-Type and the body.
 *
 * This file pair depends on jansson and the C library only, not on nginx,
 * so that it can be unit tested on its own (t/unit/validate.c).
 */


#ifndef _NGX_HTTP_INFLUENCERS_VALIDATE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_VALIDATE_H_INCLUDED_


#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>


#define NGX_HTTP_INFLUENCERS_PROMPT_MAX_CHARS  60
#define NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES  (4 * 60)
#define NGX_HTTP_INFLUENCERS_IDEM_MAX          255
#define NGX_HTTP_INFLUENCERS_UUID_LEN          36
#define NGX_HTTP_INFLUENCERS_UUID_BYTES        16
#define NGX_HTTP_INFLUENCERS_MAX_DEPTH         32

/* an org's name: 1-64 visible ASCII characters */
#define NGX_HTTP_INFLUENCERS_ORG_MAX           64

/* the scope a caller needs */
#define NGX_HTTP_INFLUENCERS_SCOPE             "influencers:write"

/* gender and ageRange are indexes into the tables below; 0 is "omitted" */
#define NGX_HTTP_INFLUENCERS_GENDER_MALE       1
#define NGX_HTTP_INFLUENCERS_GENDER_FEMALE     2
#define NGX_HTTP_INFLUENCERS_GENDER_NON_BINARY 3
#define NGX_HTTP_INFLUENCERS_AGE_YOUNG_ADULT   2

/* the largest index of each table */
#define NGX_HTTP_INFLUENCERS_GENDER_LAST       3
#define NGX_HTTP_INFLUENCERS_AGE_LAST          6


typedef struct {
    const char       *name;
    size_t            len;
} ngx_http_influencers_enum_t;


extern const ngx_http_influencers_enum_t  ngx_http_influencers_genders[];
extern const ngx_http_influencers_enum_t  ngx_http_influencers_age_ranges[];


/*
 * One problem with a body.  Once the body is checked, the problems are in
 * the order the answer lists them: formErrors first, then fieldErrors
 * field by field, each field where its first problem was found, each
 * field's messages in the order they were found.
 */

typedef struct {
    const u_char     *field;        /* NUL-terminated; NULL: formErrors */
    size_t            field_len;
    const char       *message;      /* a constant */
    size_t            name;         /* field's offset in names, or -1 */
    size_t            seq;          /* the order they were found in */
    size_t            first;        /* seq of the field's first problem */
} ngx_http_influencers_body_error_t;


typedef struct {
    unsigned int      gender;
    unsigned int      age_range;
    const u_char     *prompt;       /* points into root; NULL if omitted */
    size_t            prompt_len;   /* bytes */

    json_t           *root;         /* the parsed object; NULL if empty */

    ngx_http_influencers_body_error_t  *errs;     /* nerrs of them */
    size_t            nerrs;
    size_t            nalloc;
    u_char           *names;        /* the fields' names, one buffer */
    size_t            names_len;
    size_t            names_alloc;

    /*
     * {"formErrors":[],"fieldErrors":{}}, built from errs by
     * ngx_http_influencers_validate_body_parse() only, for the harnesses
     */
    json_t           *errors;
} ngx_http_influencers_body_t;


/* what a body's check found (the values are the unit tests' too) */

typedef enum {
    NGX_HTTP_INFLUENCERS_BODY_VALID = 0,
    NGX_HTTP_INFLUENCERS_BODY_INVALID = 1,      /* b->errs, b->nerrs set */
    NGX_HTTP_INFLUENCERS_BODY_NO_MEMORY = -1
} ngx_http_influencers_body_rc_e;


/*
 * Whatever it returns, ngx_http_influencers_validate_body_free() frees what it
 * allocated.
 */
ngx_http_influencers_body_rc_e ngx_http_influencers_validate_body_check(
    ngx_http_influencers_body_t *b, const u_char *p, size_t len);

/* the same, and an invalid body's problems as a jansson object in errors */
ngx_http_influencers_body_rc_e ngx_http_influencers_validate_body_parse(
    ngx_http_influencers_body_t *b, const u_char *p, size_t len);
void ngx_http_influencers_validate_body_free(ngx_http_influencers_body_t *b);

/*
 * An invalid body's problems as the answer's details,
 * {"formErrors":[...],"fieldErrors":{"field":[...],...}}, byte for byte
 * what jansson's compact dump of b->errors is: the room it takes, and the
 * JSON written to p, which has that room; returns the end.
 */
size_t ngx_http_influencers_validate_body_errors_len(
    const ngx_http_influencers_body_t *b);
u_char *ngx_http_influencers_validate_body_errors(
    const ngx_http_influencers_body_t *b, u_char *p);

/* whether errs[i] is a field's first problem: it opens the field's list */
#define ngx_http_influencers_validate_body_error_opens(b, i)                  \
    ((b)->errs[i].field != NULL                                               \
     && ((i) == 0 || (b)->errs[(i) - 1].field == NULL                         \
         || (b)->errs[(i) - 1].first != (b)->errs[i].first))

/*
 * The room the canonical form of a valid body may take: both enums at
 * their longest, and a prompt each of whose bytes took six ("\u001F").
 */
#define NGX_HTTP_INFLUENCERS_CANONICAL_MAX                                    \
    (sizeof("{\"ageRange\":\"young_adult\",\"gender\":\"non_binary\","        \
            "\"prompt\":\"\"}") - 1                                           \
     + 6 * NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES)

/*
 * The meaning of a body that ngx_http_influencers_validate_body_parse()
 * accepted, written one way: keys sorted, no whitespace, "{}" when empty.
 * Returns its length, at most NGX_HTTP_INFLUENCERS_CANONICAL_MAX.
 */
size_t ngx_http_influencers_validate_body_canonical(
    const ngx_http_influencers_body_t *b, u_char *out);

/*
 * A hex digit's value, either case, else -1: the one hex parser of the
 * nginx-free code (nginx's ngx_hextoi() reads a whole number, and nginx).
 */
int ngx_http_influencers_validate_hex_digit(u_char c);

/* 0 and 16 bytes in out when p is a UUID (8-4-4-4-12 hex), else -1 */
int ngx_http_influencers_validate_parse_uuid(const u_char *p, size_t len,
                                             u_char *out);
void ngx_http_influencers_validate_format_uuid(const u_char *id, u_char *out);

/*
 * Idempotency-Key: a token of visible ASCII, or a structured-field string.
 * The value is written to out (NGX_HTTP_INFLUENCERS_IDEM_MAX bytes at
 * most, whatever len is); returns its length, or -1 when the header is
 * malformed.
 */
ssize_t ngx_http_influencers_validate_parse_idempotency_key(const u_char *p,
    size_t len, u_char *out);

/* "Bearer <key>", scheme case-insensitive; 0 and the key, or -1 */
int ngx_http_influencers_validate_parse_bearer(const u_char *p, size_t len,
    const u_char **key, size_t *key_len);

/* application/json with optional parameters, charset utf-8 only: 0 or -1 */
int ngx_http_influencers_validate_check_content_type(const u_char *p,
                                                     size_t len);

/* 1 if the comma- or space-separated list holds the scope, else 0 */
int ngx_http_influencers_validate_has_scope(const u_char *p, size_t len,
    const char *scope, size_t scope_len);

/* the index of a value in a NULL-terminated enum table, or 0 */
unsigned int ngx_http_influencers_validate_enum_find(
    const ngx_http_influencers_enum_t *table, const u_char *p, size_t len);


#endif /* _NGX_HTTP_INFLUENCERS_VALIDATE_H_INCLUDED_ */
