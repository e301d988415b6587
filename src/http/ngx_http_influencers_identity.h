
/*
 * Copyright (C) The influencers module authors.
 *
 * Who the caller is: the directory file (API key digests, orgs, scopes,
 * projects) or trusted variables set by the gateway's own authentication.
 */


#ifndef _NGX_HTTP_INFLUENCERS_IDENTITY_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_IDENTITY_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_directory.h"


ngx_http_influencers_directory_t *ngx_http_influencers_identity_directory_load(
    ngx_conf_t *cf, ngx_str_t *file);

/*
 * NGX_OK: the caller may go on.  NGX_DECLINED: *answer is the one that
 * refuses it.
 */
ngx_int_t ngx_http_influencers_identity_authenticate(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer);
ngx_int_t ngx_http_influencers_identity_authorize_project(ngx_http_request_t *r,
    ngx_http_influencers_loc_conf_t *ilcf, ngx_http_influencers_ctx_t *ctx,
    ngx_uint_t *answer);


#endif /* _NGX_HTTP_INFLUENCERS_IDENTITY_H_INCLUDED_ */
