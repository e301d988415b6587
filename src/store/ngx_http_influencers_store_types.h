
/*
 * Copyright (C) The influencers module authors.
 *
 * The store's vocabulary, shared by the interface (store.h) and the rooms
 * behind it (the zone, the state file, Redis): one result for every
 * question put to a store, what a claim brings, what a request holds of
 * its claim (the ticket), and what is kept of an idempotency entry.  Types
 * only: no functions, so that a room behind the interface can name them
 * without including the header of the file that calls it.
 */


#ifndef _NGX_HTTP_INFLUENCERS_STORE_TYPES_H_INCLUDED_
#define _NGX_HTTP_INFLUENCERS_STORE_TYPES_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_influencers_ids.h"


/*
 * The zone, the state file and Redis keep the first 16 bytes of the key
 * digest and of the fingerprint.  Two of one org's keys colliding (a
 * birthday search of 2^64 digests) would only let that org answer itself a
 * replay; landing on another org's entry, whose key digest covers its org,
 * is a second preimage, 2^128.  By chance, a billion entries collide with
 * a probability under 10^-20.
 */

#define NGX_HTTP_INFLUENCERS_DIGEST_LEN    16

/* a fleet claim's token: which claim of a key a finish belongs to */
#define NGX_HTTP_INFLUENCERS_TOKEN_LEN     16


/*
 * What a store says: of a claim, of a finish, of a replay, whether the
 * zone answers it or Redis does.  The last two are Redis's alone, never
 * seen by the handler: STALE a finish refused (the key is another
 * claim's or job's), LOST the client's own (sent, the reply lost: an
 * operation sees UNAVAILABLE).
 */

typedef enum {
    NGX_HTTP_INFLUENCERS_STORE_NEW = 0,       /* claimed: forward it */
    NGX_HTTP_INFLUENCERS_STORE_REPLAY,        /* accepted: the ticket holds
                                                 the first answer's job */
    NGX_HTTP_INFLUENCERS_STORE_BUSY,          /* in flight */
    NGX_HTTP_INFLUENCERS_STORE_MISMATCH,      /* another request's key */
    NGX_HTTP_INFLUENCERS_STORE_FULL,          /* no room in the zone */
    NGX_HTTP_INFLUENCERS_STORE_OVER_SHARE,    /* the org holds its share */
    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE,   /* Redis cannot be reached,
                                                 too slow, or refused */
    NGX_HTTP_INFLUENCERS_STORE_FINISHED,      /* the outcome is recorded */
    NGX_HTTP_INFLUENCERS_STORE_AGAIN,         /* the handler will tell */
    NGX_HTTP_INFLUENCERS_STORE_RESEND,        /* claimed: the key's job in
                                                 doubt, the ticket holds it:
                                                 send it again */
    NGX_HTTP_INFLUENCERS_STORE_NOT_FOUND,     /* no retry of the same
                                                 bytes: go the whole way */
    NGX_HTTP_INFLUENCERS_STORE_STALE,         /* Redis: a finish refused */
    NGX_HTTP_INFLUENCERS_STORE_LOST           /* Redis: a reply lost */
} ngx_http_influencers_store_e;


/* the random bytes a claim draws in one call, each part named */

typedef struct {
    u_char          ulid[NGX_HTTP_INFLUENCERS_ULID_RANDOM_LEN];
    u_char          influencer_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    u_char          token[NGX_HTTP_INFLUENCERS_TOKEN_LEN];
} ngx_http_influencers_claim_random_t;


/* what a claim brings: the request's identity and a job to create */

typedef struct {
    u_char                       *idem;          /* NULL: no key */
    u_char                        key[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    ngx_http_influencers_claim_random_t  random;
    u_char                       *request_id;   /* ID_BYTES */
    uint64_t                      org_hash;
    uint64_t                      body;         /* the bytes' keyed hash */
    ngx_uint_t                    gender;       /* the job's parameters */
    ngx_uint_t                    age_range;
} ngx_http_influencers_claim_t;


/*
 * What a request holds of its claim, from the claim to the finish: the
 * job the store answered with, and the store's own handles (the zone's
 * record, the fleet's operation), which nobody but the store reads.  A
 * key names one job from its first claim on: a claim that finds the key's
 * job in doubt (resend) gets that job's ids, its first request's id and
 * the parameters it was sent with, so that it is sent again byte for byte.
 */

typedef struct {
    u_char                  job_id[NGX_HTTP_INFLUENCERS_ID_BYTES]; /* ULID */
    u_char                  influencer_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    u_char                  request_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    ngx_uint_t                         gender;
    ngx_uint_t                         age_range;
    ngx_uint_t                         attempt;          /* the claim's */
    time_t                             retry_after;
    time_t                             expires;          /* 0: no key */
    uint64_t                           expires_ms;       /* wall clock */

    /* the store's own */
    void                              *record;           /* the zone's */
    void                              *fleet;            /* Redis's op */

    unsigned                           resend:1;         /* the key's job */
    unsigned                           landed:1;         /* accepted now */
} ngx_http_influencers_store_ticket_t;


/*
 * What the state file, the journal and Redis keep of an idempotency entry:
 * the job itself, so that a job in doubt is sent again as it was.
 */

typedef enum {
    NGX_HTTP_INFLUENCERS_ENTRY_DONE = 1,      /* accepted */
    NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN,       /* in doubt: the key keeps
                                                 its job */
    NGX_HTTP_INFLUENCERS_ENTRY_RELEASED       /* the key was given back */
} ngx_http_influencers_entry_state_e;

typedef struct {
    u_char                        key[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        fingerprint[NGX_HTTP_INFLUENCERS_DIGEST_LEN];
    u_char                        job_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    u_char                      influencer_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    u_char                        request_id[NGX_HTTP_INFLUENCERS_ID_BYTES];
    uint64_t                      expires;      /* wall clock, ms */
    uint64_t                      org_hash;
    uint32_t                      retry_after;
    u_char                        state;        /* entry_state_e */
    u_char                        gender;
    u_char                        age_range;
    u_char                        reserved;
} ngx_http_influencers_entry_t;


/* a zone's counters, and what a store reports of itself */

typedef struct {
    uint64_t                      claims;
    uint64_t                      replays;
    uint64_t                      conflicts;
    uint64_t                      mismatches;
    uint64_t                      releases;
    uint64_t                      lease_expiries;
    uint64_t                      capacity;
    uint64_t                      accepted;
    uint64_t                      failed;
    uint64_t                      share;
    uint64_t                      resends;      /* a key's job sent again */
    uint64_t                      unknown;      /* outcomes in doubt */
    uint64_t                      kept;         /* failures of a job in
                                                   doubt: the key keeps it */

    /* fleet mode, counted outside the lock */
    ngx_atomic_t                  redis_ops;    /* round trips */
    ngx_atomic_t                  redis_failures;
    ngx_atomic_t                  redis_fallbacks;
    ngx_atomic_t                  redis_stale;  /* finishes refused */

    /* fleet mode: claims taken back (Redis refused or answered them) */
    uint64_t                      unclaimed;

    /* fleet mode: finishes owed to Redis, kept in the zone */
    uint64_t                      owed;         /* kept */
    uint64_t                      resent;       /* sent again from it */
    uint64_t                      abandoned;    /* expired unsent */
    uint64_t                      unkept;       /* no room to keep one */

    /* fleet mode: what Redis is */
    uint64_t                      redis_lost;   /* restarts without data */
    uint64_t                      redis_restarts;
    uint64_t                      redis_bad;    /* values refused */
} ngx_http_influencers_counters_t;


typedef struct {
    ngx_str_t                     name;
    ngx_uint_t                    records;
    ngx_uint_t                    free;
    ngx_uint_t                    keyed;
    ngx_uint_t                    inflight;
    ngx_uint_t                    orgs;
    ngx_uint_t                    largest_org;
    ngx_uint_t                    org_limit;
    size_t                        record_size;
    ngx_uint_t                    owing;        /* finishes not yet taken */
    ngx_uint_t                    owing_max;
    ngx_uint_t                    redis_unsafe; /* 1: can lose entries */
    ngx_http_influencers_counters_t  counters;
} ngx_http_influencers_stats_t;


#endif /* _NGX_HTTP_INFLUENCERS_STORE_TYPES_H_INCLUDED_ */
