
/*
 * Copyright (C) The influencers module authors.
 *
 * The one way the module writes JSON: into a buffer sized beforehand,
 * literals copied as they are, strings quoted and escaped exactly as
 * nginx's ngx_escape_json() escapes them (which is also how jansson's
 * compact dump escaped the errors it once wrote, so that no answer's
 * bytes change):
 *
 *     len = NGX_HTTP_INFLUENCERS_JSON_LIT_LEN("{\"a\":")
 *           + ngx_http_influencers_json_str_len(s, n) + 1;
 *     p = start = ngx_pnalloc(pool, len);
 *     p = ngx_http_influencers_json_lit(p, "{\"a\":");
 *     p = ngx_http_influencers_json_str(p, s, n);
 *     *p++ = '}';
 *
 * It needs the C library only: the body's validation, which is built and
 * fuzzed without nginx, writes with it too.
 */


#ifndef _NGX_HTTP_INFLUENCERS_JSON_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_JSON_H_INCLUDED_


#include <stddef.h>
#include <string.h>
#include <sys/types.h>


/* a literal that needs no escaping: punctuation, keys, constants */
#define NGX_HTTP_INFLUENCERS_JSON_LIT_LEN(s)  (sizeof(s) - 1)
#define ngx_http_influencers_json_lit(p, s)                                   \
    ngx_http_influencers_json_raw(p, s, sizeof(s) - 1)


/* bytes known to need no escaping: ids, digits, checked names */

static inline u_char *
ngx_http_influencers_json_raw(u_char *p, const void *s, size_t len)
{
    memcpy(p, s, len);

    return p + len;
}


/*
 * A quote and a backslash escaped by a backslash, the five controls that
 * JSON names by a letter (\b \t \n \f \r) so, the other controls as \u00XX
 * in upper-case hex, and every other byte, DEL and UTF-8 included, as it
 * is: what ngx_escape_json() writes, byte for byte.
 */

static inline size_t
ngx_http_influencers_json_escape_len(const u_char *s, size_t len)
{
    size_t  n;

    for (n = len; len--; s++) {
        if (*s > 0x1f) {
            n += (*s == '"' || *s == '\\');

        } else {
            n += (*s == '\b' || *s == '\t' || *s == '\n' || *s == '\f'
                  || *s == '\r') ? 1 : 5;
        }
    }

    return n;
}


static inline u_char *
ngx_http_influencers_json_escape(u_char *p, const u_char *s, size_t len)
{
    u_char             c;
    static const char  hex[] = "0123456789ABCDEF";

    while (len--) {
        c = *s++;

        if (c > 0x1f) {
            if (c == '"' || c == '\\') {
                *p++ = '\\';
            }

            *p++ = c;
            continue;
        }

        *p++ = '\\';

        switch (c) {

        case '\b':
            *p++ = 'b';
            break;

        case '\t':
            *p++ = 't';
            break;

        case '\n':
            *p++ = 'n';
            break;

        case '\f':
            *p++ = 'f';
            break;

        case '\r':
            *p++ = 'r';
            break;

        default:
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    return p;
}


/* a quoted, escaped string: its length, and the string */

static inline size_t
ngx_http_influencers_json_str_len(const u_char *s, size_t len)
{
    return 2 + ngx_http_influencers_json_escape_len(s, len);
}


static inline u_char *
ngx_http_influencers_json_str(u_char *p, const u_char *s, size_t len)
{
    *p++ = '"';
    p = ngx_http_influencers_json_escape(p, s, len);
    *p++ = '"';

    return p;
}


#endif /* _NGX_HTTP_INFLUENCERS_JSON_H_INCLUDED_ */
