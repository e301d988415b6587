
/*
 * Copyright (C) The influencers module authors.
 *
 * The zone on disk: a snapshot written when nginx stops, and a journal of
 * every entry accepted since, so that a crash loses nothing older than a
 * second or two.
 */


#ifndef _NGX_HTTP_INFLUENCERS_STATE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_STATE_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"


/* the zone's journal: what ngx_http_influencers_zone.c calls */
extern const ngx_http_influencers_zone_journal_t
    ngx_http_influencers_state_journal;


ngx_int_t ngx_http_influencers_state_conf(ngx_conf_t *cf);
ngx_int_t ngx_http_influencers_state_open(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_zone_t *ozone, ngx_log_t *log);
void ngx_http_influencers_state_load(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_journal_t *journal, ngx_log_t *log);
ngx_int_t ngx_http_influencers_state_save(ngx_http_influencers_zone_t *zone,
    ngx_log_t *log);
ngx_int_t ngx_http_influencers_state_rotate(
    ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_journal_t *journal, ngx_log_t *log);
void ngx_http_influencers_state_append(ngx_http_influencers_zone_t *zone,
    ngx_uint_t seq, ngx_http_influencers_entry_t *entry, ngx_log_t *log);
ngx_int_t ngx_http_influencers_state_init_process(
    ngx_http_influencers_zone_t *zone, ngx_cycle_t *cycle);
void ngx_http_influencers_state_exit_process(
    ngx_http_influencers_zone_t *zone);

/* the readers of outside bytes, nginx-free enough for a fuzzer */
ngx_int_t ngx_http_influencers_state_header(u_char *buf, size_t len,
    uint32_t *version);
size_t ngx_http_influencers_state_parse(u_char *buf, size_t len,
    ngx_http_influencers_entry_pt handler, void *data, ngx_uint_t *damaged,
    ngx_uint_t *bad);


#endif /* _NGX_HTTP_INFLUENCERS_STATE_H_INCLUDED_ */
