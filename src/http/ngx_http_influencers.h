
/*
 * Copyright (C) The influencers module authors.
 *
 * Types shared by the pieces of the influencers module.
 */


#ifndef _NGX_HTTP_INFLUENCERS_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_influencers_validate.h"
#include "ngx_http_influencers_ids.h"
#include "ngx_http_influencers_store_types.h"


typedef struct ngx_http_influencers_zone_s       ngx_http_influencers_zone_t;
typedef struct ngx_http_influencers_directory_s
    ngx_http_influencers_directory_t;


typedef struct {
    ngx_shm_zone_t                    *shm_zone;
    ngx_shm_zone_t                    *stats_zone;
    ngx_str_t                          backend;
    size_t                             body_limit;
    time_t                             retry_after;
    time_t                             busy_retry_after;

    ngx_http_influencers_directory_t  *directory;
    ngx_http_complex_value_t          *org;
    ngx_http_complex_value_t          *scopes;
    ngx_http_complex_value_t          *target_gender;

    ngx_int_t                          other_methods;   /* 405 or 0 */
    ngx_str_t                          other_location;
} ngx_http_influencers_loc_conf_t;


/* what a job is made of once the request has been checked */

typedef struct {
    ngx_str_t                          org;
    u_char                   project[NGX_HTTP_INFLUENCERS_UUID_BYTES];
    ngx_uint_t                         gender;
    ngx_uint_t                         age_range;
    u_char                   prompt[NGX_HTTP_INFLUENCERS_PROMPT_MAX_BYTES];
    size_t                             prompt_len;
    unsigned                           has_prompt:1;
} ngx_http_influencers_job_t;


/*
 * How a forward ended: the forward's (ngx_http_influencers_forward.c sets
 * it, and says which answer each gets); here so that the request's
 * context can hold it and the store and the metrics read it without the
 * forward's header.  What the store cares for is whether the job may
 * have reached the backend: a forward that failed before a byte was
 * sent, or that the backend answered with a status, failed for sure; one
 * cut short after the job was sent may have landed (in doubt).  The first
 * five are influencers_forwards_total's outcomes, in its order.
 */

typedef enum {
    NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED = 0,    /* a 2xx */
    NGX_HTTP_INFLUENCERS_FORWARD_FAILED,          /* for sure */
    NGX_HTTP_INFLUENCERS_FORWARD_NOT_FOUND,       /* the backend's 404 */
    NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT,         /* nginx's 504, nothing
                                                     sent: for sure */
    NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN,         /* sent, cut short: in
                                                     doubt */
    NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT,    /* nginx's 504 after the
                                                     job was sent: in doubt */
    NGX_HTTP_INFLUENCERS_FORWARD_NOT_STARTED      /* no subrequest: for
                                                     sure, never counted */
} ngx_http_influencers_forward_e;


/* the key keeps its job: the forward may have reached the backend */

static ngx_inline ngx_uint_t
ngx_http_influencers_forward_in_doubt(ngx_http_influencers_forward_e outcome)
{
    return outcome == NGX_HTTP_INFLUENCERS_FORWARD_UNKNOWN
           || outcome == NGX_HTTP_INFLUENCERS_FORWARD_TIMEOUT_SENT;
}


/* the job did not reach the backend, or the backend refused it */

static ngx_inline ngx_uint_t
ngx_http_influencers_forward_failed(ngx_http_influencers_forward_e outcome)
{
    return outcome != NGX_HTTP_INFLUENCERS_FORWARD_ACCEPTED
           && !ngx_http_influencers_forward_in_doubt(outcome);
}


typedef struct ngx_http_influencers_ctx_s {
    u_char                   request_id[NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN];
    u_char                   request_raw[NGX_HTTP_INFLUENCERS_ID_BYTES];

    /* the job's first request's id: what its forward carries */
    u_char                  job_request_id[NGX_HTTP_INFLUENCERS_REQUEST_ID_LEN];

    ngx_http_influencers_job_t         job;
    ngx_uint_t                         target_gender;

    u_char                             idem[NGX_HTTP_INFLUENCERS_IDEM_MAX];
    size_t                             idem_len;

    size_t                             received;
    ngx_http_influencers_store_ticket_t  ticket;     /* the store's */

    /* "job_" and the ULID, "inf_" and hex: written once has_job is set */
    u_char                   job_id[NGX_HTTP_INFLUENCERS_JOB_ID_LEN];
    u_char                   influencer_id[NGX_HTTP_INFLUENCERS_INF_ID_LEN];

    /* the project as text, written once with the job's digests */
    u_char                   project_id[NGX_HTTP_INFLUENCERS_UUID_LEN];

    ngx_http_request_t                *sr;
    ngx_http_influencers_forward_e     forward;          /* how it ended */
    ngx_uint_t                         answer;           /* the one sent */

    unsigned                           has_idem:1;
    unsigned                           type_unchecked:1;
    unsigned                           reading:1;
    unsigned                           done:1;
    unsigned                           has_job:1;        /* accept's ids */
    unsigned                           claimed:1;        /* store owes a
                                                            finish */
    unsigned                           idempotency:3;    /* for the log */
} ngx_http_influencers_ctx_t;


extern ngx_module_t  ngx_http_influencers_module;


#endif /* _NGX_HTTP_INFLUENCERS_H_INCLUDED_ */
