
/*
 * Copyright (C) The influencers module authors.
 *
 * The directory file, read at configuration time: API key digests with
 * their org and scopes, and each org's projects.  The checks of what the
 * file holds live here, apart from nginx (jansson and the C library only),
 * so that they can be fuzzed on their own (t/fuzz/fuzz_directory.c);
 * ngx_http_influencers_identity.c reads the file and keeps the result.
 */


#ifndef _NGX_HTTP_INFLUENCERS_DIRECTORY_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_DIRECTORY_H_INCLUDED_


#include "ngx_http_influencers_validate.h"


/* values of a project's targetGender; gender indexes come first */
#define NGX_HTTP_INFLUENCERS_TARGET_ANY  4

/* nginx's NGX_MAX_CONF_ERRSTR, and its NUL */
#define NGX_HTTP_INFLUENCERS_DIR_ERRSTR  (1024 + 1)


typedef struct {
    u_char            digest[32];
    const char       *org;          /* in root */
    size_t            org_len;
    unsigned int      write;        /* holds influencers:write */
    size_t            index;        /* in keys[] */
} ngx_http_influencers_dir_key_t;


typedef struct {
    u_char            id[NGX_HTTP_INFLUENCERS_UUID_BYTES];
    const char       *org;          /* in root */
    size_t            org_len;
    unsigned int      target_gender;
    size_t            index;        /* in projects[] */
} ngx_http_influencers_dir_project_t;


typedef struct {
    json_t                              *root;
    ngx_http_influencers_dir_key_t      *keys;       /* sorted by digest */
    size_t                               nkeys;
    ngx_http_influencers_dir_project_t  *projects;   /* sorted by id */
    size_t                               nprojects;
    char                       error[NGX_HTTP_INFLUENCERS_DIR_ERRSTR];
} ngx_http_influencers_dir_t;


extern const ngx_http_influencers_enum_t  ngx_http_influencers_targets[];


/*
 * The file's parsed JSON, taken over whatever the result (freed by
 * ngx_http_influencers_directory_free()).  0: valid; 1: invalid, d->error says
 * why; -1: out of memory.
 */
int ngx_http_influencers_directory_parse(ngx_http_influencers_dir_t *d,
    json_t *root);
void ngx_http_influencers_directory_free(ngx_http_influencers_dir_t *d);

/* 1-64 visible ASCII characters, no quote or backslash: 0, else -1 */
int ngx_http_influencers_directory_valid_org(const u_char *p, size_t len);


#endif /* _NGX_HTTP_INFLUENCERS_DIRECTORY_H_INCLUDED_ */
