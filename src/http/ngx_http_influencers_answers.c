
/*
 * Copyright (C) The influencers module authors.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_influencers_answers.h"


/*
 * Indexed by ngx_http_influencers_answer_e.  The 202's name is for the
 * debug log alone: an accepted job has no error code.
 */

static const ngx_http_influencers_answer_t  ngx_http_influencers_table[] = {
    { NGX_HTTP_ACCEPTED, ngx_string("ACCEPTED"), ngx_null_string },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BAD_REQUEST"),
      ngx_string("Bad request.") },
    { NGX_HTTP_UNAUTHORIZED, ngx_string("UNAUTHENTICATED"),
      ngx_string("Missing or invalid API key.") },
    { NGX_HTTP_FORBIDDEN, ngx_string("FORBIDDEN_SCOPE"),
      ngx_string("API key lacks the influencers:write scope.") },
    { NGX_HTTP_NOT_FOUND, ngx_string("NOT_FOUND"),
      ngx_string("Project not found.") },
    { NGX_HTTP_NOT_ALLOWED, ngx_string("METHOD_NOT_ALLOWED"),
      ngx_string("Method not allowed.") },
    { NGX_HTTP_REQUEST_TIME_OUT, ngx_string("REQUEST_TIMEOUT"),
      ngx_string("The request was not received in time.") },
    { NGX_HTTP_CONFLICT, ngx_string("IDEMPOTENCY_IN_PROGRESS"),
      ngx_string("A request with this Idempotency-Key is still in "
                 "progress.") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, ngx_string("PAYLOAD_TOO_LARGE"),
      ngx_string("Request body too large.") },
    { NGX_HTTP_REQUEST_URI_TOO_LARGE, ngx_string("URI_TOO_LONG"),
      ngx_string("Request URI too long.") },
    { NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, ngx_string("UNSUPPORTED_MEDIA_TYPE"),
      ngx_string("Content-Type must be application/json.") },
    { NGX_HTTP_INFLUENCERS_UNPROCESSABLE, ngx_string("VALIDATION"),
      ngx_string("Invalid body.") },
    { NGX_HTTP_INFLUENCERS_UNPROCESSABLE, ngx_string("VALIDATION"),
      ngx_string("Invalid path parameter.") },
    { NGX_HTTP_INFLUENCERS_UNPROCESSABLE, ngx_string("VALIDATION"),
      ngx_string("Invalid Idempotency-Key header.") },
    { NGX_HTTP_INFLUENCERS_UNPROCESSABLE, ngx_string("IDEMPOTENCY_KEY_REUSED"),
      ngx_string("This Idempotency-Key was used with a different "
                 "request.") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("REQUEST_HEADER_TOO_LARGE"),
      ngx_string("Request header too large.") },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, ngx_string("INTERNAL"),
      ngx_string("Internal error.") },
    { NGX_HTTP_NOT_IMPLEMENTED, ngx_string("NOT_IMPLEMENTED"),
      ngx_string("Not implemented.") },
    { NGX_HTTP_BAD_GATEWAY, ngx_string("UPSTREAM_ERROR"),
      ngx_string("The rendering backend failed.") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("CAPACITY"),
      ngx_string("The gateway cannot take the job now.") },
    { NGX_HTTP_GATEWAY_TIME_OUT, ngx_string("UPSTREAM_TIMEOUT"),
      ngx_string("The rendering backend did not answer in time.") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("UNAVAILABLE"),
      ngx_string("Service unavailable.") },
    { NGX_HTTP_NOT_FOUND, ngx_string("NOT_FOUND"), ngx_string("Not found.") },
    { NGX_HTTP_TOO_MANY_REQUESTS, ngx_string("TOO_MANY_REQUESTS"),
      ngx_string("Too many requests.") },
    { NGX_HTTP_VERSION_NOT_SUPPORTED, ngx_string("HTTP_VERSION_NOT_SUPPORTED"),
      ngx_string("HTTP version not supported.") }
};


const ngx_http_influencers_answer_t *
ngx_http_influencers_answers_get(ngx_uint_t answer)
{
    return &ngx_http_influencers_table[answer];
}


const char *
ngx_http_influencers_answers_name(ngx_uint_t answer)
{
    return (const char *) ngx_http_influencers_table[answer].code.data;
}


ngx_uint_t
ngx_http_influencers_answers_status(ngx_uint_t answer)
{
    return ngx_http_influencers_table[answer].status;
}


/* how many answers there are: every one is counted */

ngx_uint_t
ngx_http_influencers_answers_count(void)
{
    return sizeof(ngx_http_influencers_table)
           / sizeof(ngx_http_influencers_answer_t);
}
