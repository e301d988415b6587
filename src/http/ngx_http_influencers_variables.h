
/*
 * Copyright (C) The influencers module authors.
 *
 * What the module lets be logged: log_format's variables, read from the
 * request's context.  Never a key, the API key's or the partner's.
 */


#ifndef _NGX_HTTP_INFLUENCERS_VARIABLES_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_VARIABLES_H_INCLUDED_


#include "ngx_http_influencers.h"


/* the request's idempotency outcome, for $influencers_idempotency */

#define NGX_HTTP_INFLUENCERS_IDEM_NONE      0
#define NGX_HTTP_INFLUENCERS_IDEM_CLAIM     1
#define NGX_HTTP_INFLUENCERS_IDEM_REPLAY    2
#define NGX_HTTP_INFLUENCERS_IDEM_CONFLICT  3
#define NGX_HTTP_INFLUENCERS_IDEM_MISMATCH  4
#define NGX_HTTP_INFLUENCERS_IDEM_RELEASED  5
#define NGX_HTTP_INFLUENCERS_IDEM_RESEND    6


ngx_int_t ngx_http_influencers_variables_add(ngx_conf_t *cf);


#endif /* _NGX_HTTP_INFLUENCERS_VARIABLES_H_INCLUDED_ */
