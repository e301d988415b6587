
/*
 * Copyright (C) The influencers module authors.
 *
 * Identifiers and digests: kernel randomness, ULIDs, request ids,
 * SHA-256.
 */


#ifndef _NGX_HTTP_INFLUENCERS_IDS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_IDS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* a binary id: a ULID (job), an influencer id, a request id, a UUID */
#define NGX_HTTP_INFLUENCERS_ID_BYTES        16
/* the random part of a ULID: 80 bits */
#define NGX_HTTP_INFLUENCERS_ULID_RANDOM_LEN 10

#define NGX_HTTP_INFLUENCERS_ULID_LEN        26
#define NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN  (sizeof("req_") - 1 + 32)
#define NGX_HTTP_INFLUENCERS_JOB_ID_LEN      (sizeof("job_") - 1 + 26)
#define NGX_HTTP_INFLUENCERS_INF_ID_LEN      (sizeof("inf_") - 1 + 32)
#define NGX_HTTP_INFLUENCERS_SHA256_LEN      32


void ngx_http_influencers_ids_init_process(void);
void ngx_http_influencers_ids_exit_process(void);
ngx_int_t ngx_http_influencers_ids_random(u_char *buf, size_t n);
ngx_int_t ngx_http_influencers_ids_request_id(u_char *out, u_char *raw);
void ngx_http_influencers_ids_request_id_text(u_char *out, const u_char *raw);
u_char *ngx_http_influencers_ids_hex(u_char *dst, const u_char *src,
    size_t len);

/* 16 bytes: 48-bit big-endian milliseconds, 80 random bits */
void ngx_http_influencers_ids_ulid_encode(const u_char *ulid, u_char *out);
uint64_t ngx_http_influencers_ids_ulid_time(const u_char *ulid);
u_char *ngx_http_influencers_ids_iso_time(u_char *p, uint64_t ms);

/* what ngx_http_time() and "%T" write, without ngx_sprintf() */
u_char *ngx_http_influencers_ids_http_time(u_char *p, time_t t);
u_char *ngx_http_influencers_ids_decimal(u_char *p, uint64_t n);

ngx_int_t ngx_http_influencers_ids_sha256(const u_char *p, size_t len,
    u_char *out);


#endif /* _NGX_HTTP_INFLUENCERS_IDS_H_INCLUDED_ */
