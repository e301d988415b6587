
/*
 * Copyright (C) The influencers module authors.
 *
 * Idempotency as one interface: a retry of the same bytes replayed, look
 * up or claim, then finish or release; the store's directives and its
 * process hooks.  The zone alone on one gateway, or Redis for a fleet with
 * the zone as its cache, and the zone's state file: all behind it, so that
 * the handler reads the same either way and never sees a record, a zone's
 * shared memory, a Redis link or a state file.  What a request holds of
 * its claim is its ticket (ngx_http_influencers_store_types.h).
 */


#ifndef _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_store_types.h"


/* an answer that came later: the request is resumed with it */

typedef void (*ngx_http_influencers_store_pt)(ngx_http_request_t *r,
    ngx_http_influencers_store_e result);


/* configuration: the directives, and a location's reference to a zone */

char *ngx_http_influencers_store_zone_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_influencers_store_redis_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_shm_zone_t *ngx_http_influencers_store_ref(ngx_conf_t *cf,
    ngx_str_t *value);

/* each process's: the journal, Redis's links; the master's snapshot */

ngx_int_t ngx_http_influencers_store_init_process(ngx_cycle_t *cycle);
void ngx_http_influencers_store_exit_process(ngx_cycle_t *cycle);
void ngx_http_influencers_store_exit_master(ngx_cycle_t *cycle);

/* what a request is known by before its body is parsed */

uint64_t ngx_http_influencers_store_org_hash(u_char *org, size_t len);
uint64_t ngx_http_influencers_store_body_hash(
    ngx_http_influencers_zone_t *zone, u_char *prefix, size_t plen,
    u_char *body, size_t len);

/* REPLAY (the ticket holds the first answer's job) or NOT_FOUND */

ngx_http_influencers_store_e ngx_http_influencers_store_replay(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket, ngx_log_t *log);

/*
 * AGAIN: the handler will be called with the answer; anything else is the
 * answer, and the handler is not called.
 */

ngx_http_influencers_store_e ngx_http_influencers_store_claim(
    ngx_http_request_t *r, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_claim_t *claim,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_store_pt handler);

/* FINISHED, or AGAIN with a handler; a NULL handler waits for nothing */

ngx_http_influencers_store_e ngx_http_influencers_store_finish(
    ngx_http_request_t *r, ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_store_ticket_t *ticket,
    ngx_http_influencers_forward_e outcome,
    ngx_http_influencers_store_pt handler);
void ngx_http_influencers_store_cleanup(
    ngx_http_influencers_store_ticket_t *ticket);

/* the zones of a cycle, one after another (NULL starts), and their stats */

ngx_http_influencers_zone_t *ngx_http_influencers_store_next(
    ngx_cycle_t *cycle, ngx_http_influencers_zone_t *prev);
ngx_int_t ngx_http_influencers_store_stats(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_stats_t *st);


#endif /* _NGX_HTTP_INFLUENCERS_STORE_H_INCLUDED_ */
