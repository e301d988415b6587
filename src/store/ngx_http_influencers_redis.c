
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_redis.h"
#include "ngx_http_influencers_redis_conf.h"
#include "ngx_http_influencers_crc16.h"

#include <ngx_sha1.h>


/*
 * One connection per worker per zone, opened by the first operation (a
 * request without Idempotency-Key never gets here), then kept: a link.
 *
 *   IDLE        never connected;
 *   CONNECTING  the socket is connecting, or AUTH, SELECT and the two
 *               SCRIPT LOADs are on their way (one round trip); the
 *               operations wait in the link's queue, each under its own
 *               command timeout, and are sent once all four answered, so
 *               that an operation that gave up was never sent;
 *   READY       operations are sent as they come, pipelined;
 *   CLOSING     hiredis is freeing the context (it does so once the reply
 *               being handled returns);
 *   BACKOFF     after a failure, nothing is tried until the backoff ends
 *               (50ms, doubled at each failure in a row up to 1s, reset by
 *               a connection that got through its handshake): operations
 *               are declined at once.  A timer then reconnects, even if
 *               no request asks, so that a recovered Redis is found
 *               connected.
 *
 * Any failure of the connection (an error, EOF, a connect that did not
 * get through its handshake within connect_timeout, a command that got no
 * reply within timeout) frees the hiredis context, which fails every
 * operation still pending, and starts a backoff.
 *
 * What an operation that failed that way leaves behind is set right
 * through the zone, which keeps every finish owed to Redis until Redis has
 * it (ngx_http_influencers_zone_owe()), so that neither a worker's death
 * nor its exit at a reload loses one:
 *
 *   - a finish that was not taken (lost, timed out, an error reply such as
 *     OOM, READONLY or LOADING, a reply the module does not expect) stays
 *     owed, and any worker sends it again from its timer, with a backoff,
 *     until Redis takes it or the entry expires.  A 202 given is never
 *     forgotten by the fleet: the claim in Redis carries the job, and the
 *     finish applies whichever claim holds the key, as long as it is the
 *     same job;
 *   - a claim whose reply was lost may have run, and its request was told
 *     it failed: it is owed a release of its token (a failure: nothing was
 *     sent), so that its key does not answer 409 until the lease ends.
 *
 * Both only apply while the key is still that token's (a release) or that
 * job's (an acceptance), so a late or repeated one changes nothing that is
 * not its own.
 *
 * hiredis calls back with a pointer that outlives the operation: a slot,
 * the link's, which the operation is attached to while it lasts.  A slot
 * goes back to the link's free list once hiredis has no callback of it
 * pending and its operation's handler was called.  The handler is called
 * from a posted event (or from the slot's timer), never from inside
 * hiredis nor from inside claim or finish.
 */


#define NGX_HTTP_INFLUENCERS_LINK_IDLE        0
#define NGX_HTTP_INFLUENCERS_LINK_CONNECTING  1
#define NGX_HTTP_INFLUENCERS_LINK_READY       2
#define NGX_HTTP_INFLUENCERS_LINK_CLOSING     3
#define NGX_HTTP_INFLUENCERS_LINK_BACKOFF     4
#define NGX_HTTP_INFLUENCERS_LINK_ASKING      5

#define NGX_HTTP_INFLUENCERS_BACKOFF_MIN      50
#define NGX_HTTP_INFLUENCERS_BACKOFF_MAX      1000

#define NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM     0
#define NGX_HTTP_INFLUENCERS_SCRIPT_FINISH    1


/* <prefix>:<org hash, 16 hex>:<key digest, 64 hex> */
#define NGX_HTTP_INFLUENCERS_REDIS_KEY_LEN                                    \
    (NGX_HTTP_INFLUENCERS_PREFIX_MAX + 1 + 16 + 1                             \
     + 2 * NGX_HTTP_INFLUENCERS_SHA256_LEN)

/*
 * The values (see ngx_http_influencers_redis_value_job()): a job, then a
 * claim of it ('C', or 'U' once its outcome is unknown) or its accepted
 * entry ('A'); and those of the module's earlier versions, still read
 * ('F' in flight, 'D' accepted).
 */

/* job_id influencer_id request_id gender age_range retry_after(4) */
#define NGX_HTTP_INFLUENCERS_JOB_LEN                                          \
    (3 * NGX_HTTP_INFLUENCERS_ID_BYTES + 1 + 1 + 4)

/* 'C' flags token lease_end(8) fingerprint job */
#define NGX_HTTP_INFLUENCERS_CLAIM_LEN                                        \
    (1 + 1 + NGX_HTTP_INFLUENCERS_TOKEN_LEN + 8                               \
     + NGX_HTTP_INFLUENCERS_SHA256_LEN + NGX_HTTP_INFLUENCERS_JOB_LEN)

/* 'A' flags fingerprint job expires_ms(8) */
#define NGX_HTTP_INFLUENCERS_ACCEPTED_LEN                                     \
    (1 + 1 + NGX_HTTP_INFLUENCERS_SHA256_LEN + NGX_HTTP_INFLUENCERS_JOB_LEN   \
     + 8)

/* earlier versions: 'F' token fingerprint; 'D' fingerprint job_id
 * influencer_id retry_after(4) expires_ms(8) */
#define NGX_HTTP_INFLUENCERS_INFLIGHT_LEN                                     \
    (1 + NGX_HTTP_INFLUENCERS_TOKEN_LEN + NGX_HTTP_INFLUENCERS_SHA256_LEN)
#define NGX_HTTP_INFLUENCERS_DONE_LEN                                         \
    (1 + NGX_HTTP_INFLUENCERS_SHA256_LEN + 2 * NGX_HTTP_INFLUENCERS_ID_BYTES \
     + 4 + 8)

/* a claim's flags: the job may have reached the backend before */
#define NGX_HTTP_INFLUENCERS_CLAIM_IN_DOUBT  1

#define NGX_HTTP_INFLUENCERS_SLOTS            32     /* allocated at once */
#define NGX_HTTP_INFLUENCERS_REDIS_TEXT       128    /* Redis's words */

/* the timer that sends owed finishes, and how many at a time */
#define NGX_HTTP_INFLUENCERS_OWED_TIMER       250
#define NGX_HTTP_INFLUENCERS_OWED_BATCH       32


typedef struct ngx_http_influencers_redis_link_s
    ngx_http_influencers_redis_link_t;
typedef struct ngx_http_influencers_redis_slot_s
    ngx_http_influencers_redis_slot_t;
typedef struct ngx_http_influencers_redis_fleet_s
    ngx_http_influencers_redis_fleet_t;




typedef struct {
    time_t                               logged;
    ngx_uint_t                           missed;
} ngx_http_influencers_redis_limit_t;


struct ngx_http_influencers_redis_link_s {
    ngx_http_influencers_redis_fleet_t  *fleet;
    ngx_uint_t                           index;     /* in the fleet */
    ngx_str_t                           *name;      /* for the log */
    ngx_http_influencers_redis_conf_t   *conf;
    ngx_http_influencers_zone_t         *zone;
    ngx_http_influencers_redis_io_t      io;        /* the connection */
    ngx_uint_t                           state;
    ngx_uint_t                           handshake; /* replies due */
    ngx_msec_t                           backoff;   /* the next one */
    ngx_msec_t                           retry_at;
    ngx_event_t                          timer;     /* connect, backoff */
    ngx_queue_t                          waiting;   /* until READY */
    ngx_log_t                           *log;

    ngx_http_influencers_redis_limit_t   down;      /* unreachable, slow */
    ngx_http_influencers_redis_limit_t   refused;   /* AUTH, SELECT... */
    ngx_http_influencers_redis_limit_t   replies;   /* errors, malformed */
    ngx_http_influencers_redis_limit_t   values;    /* failed the checks */
    ngx_http_influencers_redis_limit_t   replicas;  /* WAIT fell short */

    /* Sentinel: whom to ask, and the master it named (or the address of
     * a cluster's node) */
    ngx_http_influencers_redis_io_t      sentinel;
    ngx_uint_t                           asked;     /* in this round */
    ngx_uint_t                           next;      /* the one to ask */
    ngx_http_influencers_redis_addr_t    master;
    ngx_sockaddr_t                       master_sockaddr;
    u_char                               master_text[NGX_SOCKADDR_STRLEN];
    u_char                               master_host[NGX_SOCKADDR_STRLEN];
    ngx_event_t                          ask;       /* the next sentinel */

    unsigned                             closing:1;
    unsigned                             reloading:1;
    unsigned                             failing:1;
    unsigned                             exiting:1;
    unsigned                             moved:1;   /* +switch-master */
};


struct ngx_http_influencers_redis_slot_s {
    ngx_event_t                          event;     /* timeout, delivery */
    ngx_queue_t                          queue;     /* waiting */
    ngx_http_influencers_redis_fleet_t  *fleet;
    ngx_http_influencers_redis_link_t   *link;      /* where it is sent */
    ngx_uint_t                           hslot;     /* its key's, cluster */
    ngx_http_influencers_redis_op_t     *op;        /* NULL: delivered */
    ngx_http_influencers_redis_slot_t   *next;      /* free list */
    ngx_uint_t                           script;
    ngx_http_influencers_store_e      rc;

    size_t                               key_len;
    size_t                               lease_len;
    size_t                               ttl_len;
    u_char                     key[NGX_HTTP_INFLUENCERS_REDIS_KEY_LEN];
    u_char                     lease[NGX_INT64_LEN];
    u_char                     ttl[NGX_INT64_LEN];

    /* a claim's */
    u_char                     token[NGX_HTTP_INFLUENCERS_TOKEN_LEN];
    u_char                     fingerprint[NGX_HTTP_INFLUENCERS_SHA256_LEN];
    u_char                     job[NGX_HTTP_INFLUENCERS_JOB_LEN];
    uint64_t                             org_hash;
    u_char                     digest[NGX_HTTP_INFLUENCERS_SHA256_LEN];

    /* a finish's, and which of the zone's it is */
    ngx_http_influencers_finish_t        fin;
    ngx_http_influencers_finish_ref_t    ref;

    ngx_http_influencers_store_e         eval_rc;   /* its, until WAIT */
    unsigned                             calls:3;   /* replies awaited */
    unsigned                             evaled:1;  /* eval_rc is set */
    unsigned                             nowait:1;  /* WAIT not sent */
    unsigned                             asking:1;  /* ASK: ASKING first */
    unsigned                             redirects:3;
    unsigned                             queued:1;
    unsigned                             done:1;    /* rc is final */
    unsigned                             eval:1;    /* NOSCRIPT: EVAL */
    unsigned                             expired:1; /* freed by its reply */
};


/*
 * This worker's links (one per server: the configured one, the master
 * the sentinels name, or each node of a cluster the module has met) and
 * the slots its operations use.
 */

#define NGX_HTTP_INFLUENCERS_CLUSTER_NODES    64
#define NGX_HTTP_INFLUENCERS_CLUSTER_NONE     0xffff
#define NGX_HTTP_INFLUENCERS_REDIRECTS_MAX    5

struct ngx_http_influencers_redis_fleet_s {
    ngx_http_influencers_redis_conf_t   *conf;
    ngx_http_influencers_zone_t         *zone;
    ngx_log_t                           *log;
    ngx_http_influencers_redis_link_t
                               *links[NGX_HTTP_INFLUENCERS_CLUSTER_NODES];
    ngx_uint_t                           nlinks;
    uint16_t                            *map;       /* cluster: slot: link */
    ngx_event_t                          owed;      /* finishes owed */
    ngx_event_t                          refresh;   /* cluster: the map */
    ngx_msec_t                           refreshed; /* asked last, when */
    ngx_uint_t                           asked;     /* the link asked last */
    ngx_http_influencers_redis_slot_t   *free;
    void                                *chunks;
    unsigned                             exiting:1;
    unsigned                             refreshing:1;
    unsigned                             mapped:1;
    unsigned                             slots_only:1; /* no SHARDS */
};


typedef struct ngx_http_influencers_redis_chunk_s
    ngx_http_influencers_redis_chunk_t;

struct ngx_http_influencers_redis_chunk_s {
    ngx_http_influencers_redis_chunk_t  *next;
    ngx_http_influencers_redis_slot_t    slots[NGX_HTTP_INFLUENCERS_SLOTS];
};


static void ngx_http_influencers_redis_digests(void);

static ngx_http_influencers_redis_link_t *ngx_http_influencers_redis_link(
    ngx_http_influencers_redis_fleet_t *fleet,
    ngx_http_influencers_redis_addr_t *addr);
static ngx_int_t ngx_http_influencers_redis_submit(
    ngx_http_influencers_redis_slot_t *slot);
static ngx_int_t ngx_http_influencers_redis_attach(
    ngx_http_influencers_redis_slot_t *slot);
static ngx_int_t ngx_http_influencers_redis_dispatch(
    ngx_http_influencers_redis_slot_t *slot);
static ngx_http_influencers_redis_link_t *ngx_http_influencers_redis_route(
    ngx_http_influencers_redis_fleet_t *fleet, ngx_uint_t hslot);
static ngx_http_influencers_redis_link_t *ngx_http_influencers_redis_node(
    ngx_http_influencers_redis_fleet_t *fleet, u_char *ip, size_t len,
    ngx_int_t port);
static ngx_http_influencers_redis_link_t *ngx_http_influencers_redis_up(
    ngx_http_influencers_redis_fleet_t *fleet);
static ngx_uint_t ngx_http_influencers_redis_redirect(
    ngx_http_influencers_redis_slot_t *slot, redisReply *reply);
static void ngx_http_influencers_redis_asked(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_remap(
    ngx_http_influencers_redis_fleet_t *fleet, ngx_msec_t delay);
static void ngx_http_influencers_redis_refresh(ngx_event_t *ev);
static void ngx_http_influencers_redis_slots_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_uint_t ngx_http_influencers_redis_slots_range(
    ngx_http_influencers_redis_fleet_t *fleet, redisReply *range);
static ngx_uint_t ngx_http_influencers_redis_shard(
    ngx_http_influencers_redis_fleet_t *fleet, redisReply *shard);
static redisReply *ngx_http_influencers_redis_field(redisReply *map,
    const char *name);
static ngx_uint_t ngx_http_influencers_redis_word(redisReply *reply,
    const char *word);
static ngx_uint_t ngx_http_influencers_redis_assign(
    ngx_http_influencers_redis_fleet_t *fleet, long long from, long long to,
    redisReply *ip, long long port);
static ngx_int_t ngx_http_influencers_redis_send(
    ngx_http_influencers_redis_slot_t *slot);
static void ngx_http_influencers_redis_reply(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_uint_t ngx_http_influencers_redis_settled(
    ngx_http_influencers_redis_slot_t *slot);
static void ngx_http_influencers_redis_waited(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_http_influencers_store_e ngx_http_influencers_redis_unreplicated(
    ngx_http_influencers_redis_slot_t *slot, ngx_http_influencers_store_e rc,
    long long acks);
static ngx_http_influencers_store_e ngx_http_influencers_redis_claimed(
    ngx_http_influencers_redis_slot_t *slot, redisReply *reply);
static ngx_http_influencers_store_e ngx_http_influencers_redis_finished(
    ngx_http_influencers_redis_slot_t *slot, redisReply *reply);
static void ngx_http_influencers_redis_complete(
    ngx_http_influencers_redis_slot_t *slot,
    ngx_http_influencers_store_e rc);
static void ngx_http_influencers_redis_settle(
    ngx_http_influencers_redis_slot_t *slot,
    ngx_http_influencers_store_e rc);
static void ngx_http_influencers_redis_deliver(ngx_event_t *ev);
static void ngx_http_influencers_redis_timeout(ngx_event_t *ev);
static ngx_http_influencers_redis_slot_t *ngx_http_influencers_redis_slot(
    ngx_http_influencers_redis_fleet_t *fleet);
static void ngx_http_influencers_redis_slot_drop(
    ngx_http_influencers_redis_slot_t *slot);
static void ngx_http_influencers_redis_slot_free(
    ngx_http_influencers_redis_slot_t *slot);
static void ngx_http_influencers_redis_release(
    ngx_http_influencers_redis_slot_t *slot);
static void ngx_http_influencers_redis_owed_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_influencers_redis_send_finish(
    ngx_http_influencers_redis_fleet_t *fleet,
    ngx_http_influencers_redis_op_t *op, ngx_http_influencers_finish_t *fin,
    ngx_http_influencers_finish_ref_t *ref);

static ngx_int_t ngx_http_influencers_redis_connect(
    ngx_http_influencers_redis_link_t *link);
static ngx_int_t ngx_http_influencers_redis_connect_to(
    ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_addr_t *addr);
static ngx_int_t ngx_http_influencers_redis_command(
    ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_io_reply_pt handler, int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_influencers_redis_auth_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_select_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_load_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_role_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_step(
    ngx_http_influencers_redis_link_t *link, redisReply *reply,
    ngx_uint_t script, const char *what, ngx_str_t *arg);
static void ngx_http_influencers_redis_reload(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_reload_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_int_t ngx_http_influencers_redis_loaded(redisReply *reply);
static void ngx_http_influencers_redis_ready(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_info(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_info_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_int_t ngx_http_influencers_redis_info_field(redisReply *reply,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_influencers_redis_sentinel_ask(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_sentinel_auth_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_sentinel_master_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static ngx_int_t ngx_http_influencers_redis_parse_addr(u_char *ip,
    size_t len, ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen);
static void ngx_http_influencers_redis_set_addr(
    ngx_http_influencers_redis_link_t *link, ngx_sockaddr_t *sa,
    socklen_t socklen, u_char *ip, size_t len);
static void ngx_http_influencers_redis_sentinel_subscribed(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_sentinel_push(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data);
static void ngx_http_influencers_redis_sentinel_closed(
    ngx_http_influencers_redis_io_t *io);
static void ngx_http_influencers_redis_sentinel_next(ngx_event_t *ev);
static void ngx_http_influencers_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_influencers_redis_retry(ngx_event_t *ev);
static void ngx_http_influencers_redis_close(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_closed(
    ngx_http_influencers_redis_io_t *io);
static ngx_str_t *ngx_http_influencers_redis_where(
    ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_addr_t *addr);
static void ngx_http_influencers_redis_fail(
    ngx_http_influencers_redis_link_t *link);
static void ngx_http_influencers_redis_backoff(
    ngx_http_influencers_redis_link_t *link);

static void ngx_cdecl ngx_http_influencers_redis_log(
    ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_limit_t *limit, const char *fmt, ...);
static u_char *ngx_http_influencers_redis_text(u_char *dst, size_t size,
    u_char *src, size_t len);
static ngx_uint_t ngx_http_influencers_redis_is(redisReply *reply,
    char *word);
static const char *ngx_http_influencers_redis_code(redisReply *reply);
static void ngx_http_influencers_redis_scrub(u_char *p, u_char *last,
    ngx_str_t *secret);

static size_t ngx_http_influencers_redis_key(u_char *dst, ngx_str_t *prefix,
    uint64_t org_hash, u_char *key);
static u_char *ngx_http_influencers_redis_value_job(u_char *p,
    ngx_http_influencers_entry_t *entry);
static void ngx_http_influencers_redis_read_job(u_char *p,
    ngx_http_influencers_entry_t *entry);
static ngx_http_influencers_store_e ngx_http_influencers_redis_decode(
    ngx_http_influencers_redis_slot_t *slot, u_char *v, size_t len,
    ngx_http_influencers_entry_t *entry);
static u_char *ngx_http_influencers_redis_be(u_char *p, uint64_t n,
    ngx_uint_t len);
static uint64_t ngx_http_influencers_redis_unbe(u_char *p, ngx_uint_t len);


/*
 * The claim: a free key (none, or its claim expired without a job that
 * may have landed: never, since a claim's job is kept) is claimed with
 * the job this request brings, for the lease, and lives for the ttl; a
 * claim of the same request whose lease ran out, or whose outcome is
 * unknown ('U'), is taken over with a new token and lease, keeping its
 * job, which the caller then sends again; anything else is answered with
 * the value, for the caller to tell busy, accepted or another request.
 * The lease is kept in Redis's time, so that the nodes' clocks need not
 * agree.
 *
 * The finish: an accepted job is stored while the key still names that
 * job, whichever claim holds it (a late finish is as good as any), or
 * again if the key was lost; a failure releases the key, and an unknown
 * outcome keeps its job for a retry, only while the claim is still this
 * token's; a failure of a job that may have landed before keeps it too.
 */

static ngx_str_t  ngx_http_influencers_redis_scripts[] = {

    ngx_string("if redis.replicate_commands then redis.replicate_commands() "
               "end\n"
               "local v = redis.call('GET', KEYS[1])\n"
               "local t = redis.call('TIME')\n"
               "local now = tonumber(t[1]) * 1000"
               " + math.floor(tonumber(t[2]) / 1000)\n"
               "local n = now + tonumber(ARGV[3])\n"
               "local lease = ''\n"
               "for i = 1, 8 do\n"
               "    lease = string.char(n % 256) .. lease\n"
               "    n = math.floor(n / 256)\n"
               "end\n"
               "if not v then\n"
               "    redis.call('SET', KEYS[1], 'C\\0' .. ARGV[1] .. lease"
               " .. ARGV[2] .. ARGV[5], 'PX', ARGV[4])\n"
               "    return 0\n"
               "end\n"
               "local tag = string.sub(v, 1, 1)\n"
               "if (tag == 'C' or tag == 'U') and #v == 112"
               " and string.sub(v, 27, 58) == ARGV[2] then\n"
               "    if tag == 'C' then\n"
               "        local d = 0\n"
               "        for i = 19, 26 do d = d * 256 + string.byte(v, i) "
               "end\n"
               "        if d > now then return v end\n"
               "    end\n"
               "    local ttl = redis.call('PTTL', KEYS[1])\n"
               "    if ttl <= 0 then ttl = ARGV[4] end\n"
               "    v = 'C\\1' .. ARGV[1] .. lease .. string.sub(v, 27)\n"
               "    redis.call('SET', KEYS[1], v, 'PX', ttl)\n"
               "    return {v}\n"
               "end\n"
               "return v\n"),

    ngx_string("local v = redis.call('GET', KEYS[1])\n"
               "if ARGV[1] == 'A' then\n"
               "    if v then\n"
               "        local tag = string.sub(v, 1, 1)\n"
               "        local job\n"
               "        if (tag == 'C' or tag == 'U') and #v == 112 then\n"
               "            job = string.sub(v, 59, 74)\n"
               "        elseif tag == 'A' and #v == 96 then\n"
               "            job = string.sub(v, 35, 50)\n"
               "        end\n"
               "        if job ~= ARGV[3] then return 0 end\n"
               "        if tag == 'A' then return 1 end\n"
               "    end\n"
               "    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])\n"
               "    return 1\n"
               "end\n"
               "if not v or #v ~= 112 or string.sub(v, 1, 1) ~= 'C'"
               " or string.sub(v, 3, 18) ~= ARGV[2] then\n"
               "    return 0\n"
               "end\n"
               "if ARGV[1] == 'F' and string.byte(v, 2) == 0 then\n"
               "    redis.call('DEL', KEYS[1])\n"
               "    return 1\n"
               "end\n"
               "local ttl = redis.call('PTTL', KEYS[1])\n"
               "if ttl <= 0 then ttl = ARGV[5] end\n"
               "redis.call('SET', KEYS[1], 'U' .. string.sub(v, 2), 'PX',"
               " ttl)\n"
               "return 1\n")
};

/* the scripts' SHA1s, in hex, for EVALSHA: the same in every process */
static const char  *ngx_http_influencers_redis_asking[] = { "ASKING" };
static const size_t  ngx_http_influencers_redis_asking_len[] = { 6 };

static u_char  ngx_http_influencers_redis_sha[2][2 * 20];
static ngx_uint_t  ngx_http_influencers_redis_sha_done;

#if (NGX_DEBUG)
/* ngx_http_influencers_store_e, for the debug log */
static const char  *ngx_http_influencers_redis_result_names[] = {
    "new", "done", "busy", "mismatch", "", "", "failed", "finished", "",
    "resend", "", "stale", "lost"
};
#endif


static void
ngx_http_influencers_redis_digests(void)
{
    u_char      digest[20];
    ngx_uint_t  i;
    ngx_sha1_t  sha1;

    if (ngx_http_influencers_redis_sha_done) {
        return;
    }

    for (i = 0; i < 2; i++) {
        ngx_sha1_init(&sha1);
        ngx_sha1_update(&sha1, ngx_http_influencers_redis_scripts[i].data,
                        ngx_http_influencers_redis_scripts[i].len);
        ngx_sha1_final(digest, &sha1);

        (void) ngx_hex_dump(ngx_http_influencers_redis_sha[i], digest, 20);
    }

    ngx_http_influencers_redis_sha_done = 1;
}


ngx_int_t
ngx_http_influencers_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_influencers_zone_t *zone)
{
    ngx_uint_t                           i;
    ngx_http_influencers_redis_conf_t   *conf;
    ngx_http_influencers_redis_addr_t   *seeds;
    ngx_http_influencers_redis_fleet_t  *fleet;

    conf = zone->redis;

    /* the scripts' SHA1s: once a process, before a script is sent */
    ngx_http_influencers_redis_digests();

    fleet = ngx_calloc(sizeof(ngx_http_influencers_redis_fleet_t),
                       cycle->log);
    if (fleet == NULL) {
        return NGX_ERROR;
    }

    fleet->conf = conf;
    fleet->zone = zone;
    fleet->log = cycle->log;

    /* the fleet exists from here: exit_process() frees what it holds */

    conf->fleet = fleet;

    if (conf->cluster) {
        fleet->map = ngx_alloc(NGX_HTTP_INFLUENCERS_CLUSTER_SLOTS
                               * sizeof(uint16_t), cycle->log);
        if (fleet->map == NULL) {
            return NGX_ERROR;
        }

        ngx_memset(fleet->map, 0xff,
                   NGX_HTTP_INFLUENCERS_CLUSTER_SLOTS * sizeof(uint16_t));

        seeds = conf->cluster->elts;

        for (i = 0; i < conf->cluster->nelts; i++) {
            if (ngx_http_influencers_redis_link(fleet, &seeds[i]) == NULL) {
                return NGX_ERROR;
            }
        }

        fleet->refresh.handler = ngx_http_influencers_redis_refresh;
        fleet->refresh.data = fleet;
        fleet->refresh.log = cycle->log;
        fleet->refresh.cancelable = 1;

    } else if (ngx_http_influencers_redis_link(fleet, &conf->addr) == NULL) {
        return NGX_ERROR;
    }

    /* sending what the zone owes Redis never keeps a worker that is
     * shutting down: other workers will */

    fleet->owed.handler = ngx_http_influencers_redis_owed_handler;
    fleet->owed.data = fleet;
    fleet->owed.log = cycle->log;
    fleet->owed.cancelable = 1;

    ngx_add_timer(&fleet->owed, NGX_HTTP_INFLUENCERS_OWED_TIMER);

    return NGX_OK;
}


/*
 * A link to one server: the configured one, the master the sentinels
 * name, or a cluster's node (addr NULL: its own address, set later).
 */

static ngx_http_influencers_redis_link_t *
ngx_http_influencers_redis_link(ngx_http_influencers_redis_fleet_t *fleet,
    ngx_http_influencers_redis_addr_t *addr)
{
    ngx_http_influencers_redis_conf_t  *conf;
    ngx_http_influencers_redis_link_t  *link;

    if (fleet->nlinks == NGX_HTTP_INFLUENCERS_CLUSTER_NODES) {
        return NULL;
    }

    conf = fleet->conf;

    link = ngx_calloc(sizeof(ngx_http_influencers_redis_link_t), fleet->log);
    if (link == NULL) {
        return NULL;
    }

    link->fleet = fleet;
    link->index = fleet->nlinks;
    link->conf = conf;
    link->zone = fleet->zone;
    link->log = fleet->log;
    link->state = NGX_HTTP_INFLUENCERS_LINK_IDLE;
    link->backoff = NGX_HTTP_INFLUENCERS_BACKOFF_MIN;

    if (addr == NULL) {
        addr = &link->master;
    }

    link->name = conf->cluster ? &addr->name : &conf->name;

    ngx_queue_init(&link->waiting);

    ngx_http_influencers_redis_io_init(&link->io, addr, &conf->tls,
                                       fleet->log);
    link->io.closed = ngx_http_influencers_redis_closed;
    link->io.data = link;

    ngx_http_influencers_redis_io_init(&link->sentinel, NULL, &conf->tls,
                                       fleet->log);
    link->sentinel.closed = ngx_http_influencers_redis_sentinel_closed;
    link->sentinel.push = ngx_http_influencers_redis_sentinel_push;
    link->sentinel.data = link;

    link->ask.handler = ngx_http_influencers_redis_sentinel_next;
    link->ask.data = link;
    link->ask.log = fleet->log;

    /* reconnecting never keeps a worker that is shutting down */

    link->timer.data = link;
    link->timer.log = fleet->log;
    link->timer.cancelable = 1;

    fleet->links[fleet->nlinks++] = link;

    return link;
}


/*
 * The worker ends: the connections go, and no operation's handler is
 * called.  A worker shutting down gracefully gets here only once no timer
 * that is not cancelable is left, and every operation's timer is one: so
 * every operation has ended by then.  A worker told to stop at once (TERM,
 * INT) does not finalize its requests either; their operations are simply
 * dropped, as the requests are.  The finishes it was sending stay owed in
 * the zone, for the other workers, at once.
 */

void
ngx_http_influencers_redis_exit_process(ngx_http_influencers_zone_t *zone)
{
    ngx_uint_t                           i;
    ngx_http_influencers_redis_conf_t   *conf;
    ngx_http_influencers_redis_link_t   *link;
    ngx_http_influencers_redis_slot_t   *slot;
    ngx_http_influencers_redis_fleet_t  *fleet;
    ngx_http_influencers_redis_chunk_t  *chunk, *next;

    conf = zone->redis;
    fleet = conf->fleet;

    if (fleet == NULL) {
        return;
    }

    fleet->exiting = 1;

    if (fleet->owed.timer_set) {
        ngx_del_timer(&fleet->owed);
    }

    if (fleet->refresh.timer_set) {
        ngx_del_timer(&fleet->refresh);
    }

    if (fleet->refresh.posted) {
        ngx_delete_posted_event(&fleet->refresh);
    }

    for (i = 0; i < fleet->nlinks; i++) {
        link = fleet->links[i];
        link->exiting = 1;

        if (link->timer.timer_set) {
            ngx_del_timer(&link->timer);
        }

        if (link->ask.posted) {
            ngx_delete_posted_event(&link->ask);
        }
    }

    for (chunk = fleet->chunks; chunk; chunk = chunk->next) {
        for (i = 0; i < NGX_HTTP_INFLUENCERS_SLOTS; i++) {
            slot = &chunk->slots[i];

            /* a finish's zone copy is sent by another worker */
            slot->ref.no = 0;

            if (slot->op == NULL) {
                continue;
            }

            slot->op = NULL;

            if (slot->event.timer_set) {
                ngx_del_timer(&slot->event);
            }

            if (slot->event.posted) {
                ngx_delete_posted_event(&slot->event);
            }

            if (slot->queued) {
                ngx_queue_remove(&slot->queue);
                slot->queued = 0;
            }
        }
    }

    ngx_http_influencers_zone_disown(zone);

    /* the calls pending get NULL replies, for slots now detached */

    for (i = 0; i < fleet->nlinks; i++) {
        link = fleet->links[i];

        ngx_http_influencers_redis_io_free(&link->io);
        ngx_http_influencers_redis_io_free(&link->sentinel);
    }

    for (i = 0; i < fleet->nlinks; i++) {
        ngx_free(fleet->links[i]);
    }

    for (chunk = fleet->chunks; chunk; chunk = next) {
        next = chunk->next;
        ngx_free(chunk);
    }

    if (fleet->map) {
        ngx_free(fleet->map);
    }

    ngx_free(fleet);
    conf->fleet = NULL;
}


/*
 *   EVALSHA <claim> 1 <key> <token> <fingerprint> <lease> <ttl> <job>
 */

ngx_int_t
ngx_http_influencers_redis_claim(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_redis_op_t *op, ngx_msec_t lease)
{
    ngx_http_influencers_redis_conf_t   *conf;
    ngx_http_influencers_redis_slot_t   *slot;
    ngx_http_influencers_redis_fleet_t  *fleet;

    conf = zone->redis;
    fleet = conf->fleet;

    if (fleet == NULL || fleet->exiting) {
        return NGX_DECLINED;
    }

    slot = ngx_http_influencers_redis_slot(fleet);
    if (slot == NULL) {
        return NGX_ERROR;
    }

    slot->op = op;
    op->pending = slot;

    slot->script = NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM;
    slot->key_len = ngx_http_influencers_redis_key(slot->key, &conf->prefix,
                                                   op->org_hash, op->key);
    ngx_memcpy(slot->token, op->token, NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    ngx_memcpy(slot->fingerprint, op->fingerprint,
               NGX_HTTP_INFLUENCERS_SHA256_LEN);
    ngx_memcpy(slot->digest, op->key, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    slot->org_hash = op->org_hash;
    (void) ngx_http_influencers_redis_value_job(slot->job, &op->job);

    slot->lease_len = ngx_sprintf(slot->lease, "%M", ngx_max(lease, 1))
                      - slot->lease;
    slot->ttl_len = ngx_sprintf(slot->ttl, "%M", ngx_max(zone->ttl, 1))
                    - slot->ttl;

    return ngx_http_influencers_redis_submit(slot);
}


/*
 * A finish the zone keeps (ref): sent now if Redis can be asked, else left
 * owed, for the timer.  op, if any, is told either way.
 */

ngx_int_t
ngx_http_influencers_redis_finish(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_redis_op_t *op, ngx_http_influencers_finish_t *fin)
{
    ngx_http_influencers_finish_ref_t    ref;
    ngx_http_influencers_redis_conf_t   *conf;

    conf = zone->redis;

    /* this worker's while its reply may come: the timers leave it alone */

    (void) ngx_http_influencers_zone_owe(zone, fin,
                                         2 * conf->timeout
                                         + conf->tls.connect_timeout,
                                         &ref);

    if (conf->fleet == NULL || conf->fleet->exiting) {
        ngx_http_influencers_zone_unpaid(zone, &ref);
        return NGX_DECLINED;
    }

    return ngx_http_influencers_redis_send_finish(conf->fleet, op, fin, &ref);
}


/*
 *   EVALSHA <finish> 1 <key> <outcome> <token> <job_id> <value> <ttl>
 *
 * The ttl is what is left of the entry's life.
 */

static ngx_int_t
ngx_http_influencers_redis_send_finish(
    ngx_http_influencers_redis_fleet_t *fleet,
    ngx_http_influencers_redis_op_t *op, ngx_http_influencers_finish_t *fin,
    ngx_http_influencers_finish_ref_t *ref)
{
    uint64_t                            now_ms;
    ngx_int_t                           rc;
    ngx_msec_t                          left;
    ngx_http_influencers_redis_slot_t  *slot;

    slot = ngx_http_influencers_redis_slot(fleet);

    if (slot == NULL) {
        /* the zone keeps it: sent again once Redis can be reached */
        ngx_http_influencers_zone_unpaid(fleet->zone, ref);
        return NGX_ERROR;
    }

    slot->op = op;

    if (op) {
        op->pending = slot;
    }

    now_ms = ngx_http_influencers_zone_wall_ms();
    left = (fin->expires > now_ms) ? (ngx_msec_t) (fin->expires - now_ms) : 1;

    slot->script = NGX_HTTP_INFLUENCERS_SCRIPT_FINISH;
    slot->key_len = ngx_http_influencers_redis_key(slot->key,
                                                   &fleet->conf->prefix,
                                                   fin->org_hash, fin->key);
    slot->fin = *fin;
    slot->ref = *ref;
    slot->ttl_len = ngx_sprintf(slot->ttl, "%M",
                                fin->outcome == 'A' ? left : fin->ttl)
                    - slot->ttl;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, fleet->log, 0,
                   "influencers redis: finish '%c' (try %d)",
                   fin->outcome, (int) fin->tries);

    rc = ngx_http_influencers_redis_submit(slot);

    if (rc != NGX_OK) {
        ngx_http_influencers_zone_unpaid(fleet->zone, ref);
    }

    return rc;
}


/*
 * The request goes before its operation ends: the handler must not be
 * called.  A claim's reply, when it comes, is settled as a lost one.
 */

void
ngx_http_influencers_redis_cancel(ngx_http_influencers_redis_op_t *op)
{
    ngx_http_influencers_redis_slot_t  *slot;

    slot = op->pending;

    if (slot == NULL || slot->op != op) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, slot->fleet->log, 0,
                   "influencers redis: op cancelled, its request is gone");

    slot->op = NULL;

    if (!slot->event.posted) {
        /* its reply, or its timeout, settles it as nobody's */
        return;
    }

    /* settled already, for a request that would have forwarded it */

    ngx_delete_posted_event(&slot->event);

    if (slot->script == NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM
        && (slot->rc == NGX_HTTP_INFLUENCERS_STORE_NEW
            || slot->rc == NGX_HTTP_INFLUENCERS_STORE_RESEND))
    {
        ngx_http_influencers_redis_release(slot);
    }

    ngx_http_influencers_redis_slot_drop(slot);
}


/*
 * A new operation goes to the link of its key's server: declined at once
 * while there is no connection to wait for (the slot is given back, and
 * nothing is called); else sent, or queued until the connection is
 * ready, under its own timeout.
 */

static ngx_int_t
ngx_http_influencers_redis_submit(ngx_http_influencers_redis_slot_t *slot)
{
    ngx_int_t                            rc;
    ngx_http_influencers_redis_fleet_t  *fleet;

    fleet = slot->fleet;

    if (fleet->map) {
        slot->hslot = ngx_http_influencers_key_slot(slot->key, slot->key_len);
    }

    slot->link = ngx_http_influencers_redis_route(fleet, slot->hslot);

    rc = ngx_http_influencers_redis_attach(slot);

    if (rc == NGX_OK) {
        rc = ngx_http_influencers_redis_dispatch(slot);
    }

    if (rc != NGX_OK) {

        /* a cluster's node that is down: the map may name its successor */

        if (rc == NGX_DECLINED) {
            ngx_http_influencers_redis_remap(fleet, 0);
        }

        if (slot->op) {
            slot->op->pending = NULL;
            slot->op = NULL;
        }

        ngx_http_influencers_redis_slot_free(slot);
        return rc;
    }

    /* from the operation's start, whatever it waits for */

    ngx_add_timer(&slot->event, fleet->conf->timeout);

    return NGX_OK;
}


/*
 * NGX_OK: the slot's link is connected, or connecting; NGX_DECLINED: it
 * waits for its backoff to end, or cannot connect now.  A first connect,
 * or one whose backoff has ended, is started here.
 */

static ngx_int_t
ngx_http_influencers_redis_attach(ngx_http_influencers_redis_slot_t *slot)
{
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    switch (link->state) {

    case NGX_HTTP_INFLUENCERS_LINK_READY:
    case NGX_HTTP_INFLUENCERS_LINK_CONNECTING:
    case NGX_HTTP_INFLUENCERS_LINK_ASKING:
        return NGX_OK;

    case NGX_HTTP_INFLUENCERS_LINK_BACKOFF:
        if ((ngx_msec_int_t) (link->retry_at - ngx_current_msec) > 0) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                           "influencers redis: in backoff, declined");
            return NGX_DECLINED;
        }

        if (link->timer.timer_set) {
            ngx_del_timer(&link->timer);
        }

        /* fall through */

    case NGX_HTTP_INFLUENCERS_LINK_IDLE:
        if (ngx_http_influencers_redis_connect(link) != NGX_OK) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                           "influencers redis: connect failed, declined");
            return NGX_DECLINED;
        }

        return NGX_OK;

    default: /* NGX_HTTP_INFLUENCERS_LINK_CLOSING */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                       "influencers redis: closing, declined");
        return NGX_DECLINED;
    }
}


static ngx_int_t
ngx_http_influencers_redis_dispatch(ngx_http_influencers_redis_slot_t *slot)
{
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: %s %s",
                   slot->script == NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM
                   ? "claim" : "finish",
                   link->state == NGX_HTTP_INFLUENCERS_LINK_READY
                   ? "sent" : "waits for the connection");

    if (link->state == NGX_HTTP_INFLUENCERS_LINK_READY) {
        return ngx_http_influencers_redis_send(slot);
    }

    ngx_queue_insert_tail(&link->waiting, &slot->queue);
    slot->queued = 1;

    return NGX_OK;
}


/*
 *   EVALSHA <claim> 1 <key> <token> <fingerprint> <lease> <ttl> <job>
 *   EVALSHA <finish> 1 <key> <outcome> <token> <job_id> <value> <ttl>
 *
 * or EVAL with the script's text once Redis has said NOSCRIPT; and with
 * wait=, WAIT <replicas> <ms> behind it, on the same connection, so that
 * its count is of replicas that hold this write.
 */

static ngx_int_t
ngx_http_influencers_redis_send(ngx_http_influencers_redis_slot_t *slot)
{
    int                                 argc;
    size_t                              argvlen[9];
    ngx_str_t                          *script;
    const char                         *argv[9];
    ngx_http_influencers_redis_conf_t  *conf;

    script = &ngx_http_influencers_redis_scripts[slot->script];
    conf = slot->link->conf;

    if (slot->eval) {
        argv[0] = "EVAL";
        argvlen[0] = sizeof("EVAL") - 1;
        argv[1] = (const char *) script->data;
        argvlen[1] = script->len;

    } else {
        argv[0] = "EVALSHA";
        argvlen[0] = sizeof("EVALSHA") - 1;
        argv[1] = (const char *) ngx_http_influencers_redis_sha[slot->script];
        argvlen[1] = 2 * 20;
    }

    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (const char *) slot->key;
    argvlen[3] = slot->key_len;

    if (slot->script == NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM) {
        argv[4] = (const char *) slot->token;
        argvlen[4] = NGX_HTTP_INFLUENCERS_TOKEN_LEN;
        argv[5] = (const char *) slot->fingerprint;
        argvlen[5] = NGX_HTTP_INFLUENCERS_SHA256_LEN;
        argv[6] = (const char *) slot->lease;
        argvlen[6] = slot->lease_len;
        argv[7] = (const char *) slot->ttl;
        argvlen[7] = slot->ttl_len;
        argv[8] = (const char *) slot->job;
        argvlen[8] = NGX_HTTP_INFLUENCERS_JOB_LEN;

    } else {
        argv[4] = (const char *) &slot->fin.outcome;
        argvlen[4] = 1;
        argv[5] = (const char *) slot->fin.token;
        argvlen[5] = NGX_HTTP_INFLUENCERS_TOKEN_LEN;
        argv[6] = (const char *) slot->fin.job_id;
        argvlen[6] = NGX_HTTP_INFLUENCERS_ID_BYTES;
        argv[7] = (const char *) slot->fin.value;
        argvlen[7] = slot->fin.value_len;
        argv[8] = (const char *) slot->ttl;
        argvlen[8] = slot->ttl_len;
    }

    argc = 9;

    if (slot->asking) {
        if (ngx_http_influencers_redis_io_send(&slot->link->io, 1,
                              (const char **) ngx_http_influencers_redis_asking,
                              ngx_http_influencers_redis_asking_len,
                              ngx_http_influencers_redis_asked, slot)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        slot->calls++;
    }

    if (ngx_http_influencers_redis_io_send(&slot->link->io, argc, argv,
                                           argvlen,
                                           ngx_http_influencers_redis_reply,
                                           slot)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    slot->calls++;
    slot->evaled = 0;

    if (conf->wait == 0) {
        return NGX_OK;
    }

    argv[0] = "WAIT";
    argvlen[0] = sizeof("WAIT") - 1;
    argv[1] = (const char *) conf->wait_text;
    argvlen[1] = conf->wait_len;
    argv[2] = (const char *) conf->wait_ms;
    argvlen[2] = conf->wait_ms_len;

    if (ngx_http_influencers_redis_io_send(&slot->link->io, 3, argv, argvlen,
                                           ngx_http_influencers_redis_waited,
                                           slot)
        != NGX_OK)
    {
        /* the write is on its way: it counts as held by no replica */
        slot->nowait = 1;
        return NGX_OK;
    }

    slot->calls++;

    return NGX_OK;
}


/*
 * A reply, or NULL: the connection went before it came.  The last call
 * of a slot that was settled already frees it.
 */

static ngx_uint_t
ngx_http_influencers_redis_settled(ngx_http_influencers_redis_slot_t *slot)
{
    slot->calls--;

    if (!slot->done) {
        return 0;
    }

    if (slot->expired && slot->calls == 0) {
        ngx_http_influencers_redis_slot_free(slot);
    }

    return 1;
}


static void
ngx_http_influencers_redis_reply(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_slot_t  *slot = data;

    u_char                              text[NGX_HTTP_INFLUENCERS_REDIS_TEXT];
    u_char                             *p;
    ngx_http_influencers_store_e        rc;
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    if (ngx_http_influencers_redis_settled(slot)) {
        return;
    }

    if (reply == NULL) {
        /* sent, and lost with the connection: it may have been applied */
        ngx_http_influencers_redis_complete(slot,
                                           NGX_HTTP_INFLUENCERS_STORE_LOST);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* SCRIPT FLUSH, or another server: the script's text, once */

        if (!slot->eval && ngx_http_influencers_redis_is(reply, "NOSCRIPT")) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                           "influencers redis: NOSCRIPT, EVALSHA sent "
                           "again as EVAL");

            slot->eval = 1;

            if (ngx_http_influencers_redis_send(slot) == NGX_OK) {
                ngx_http_influencers_redis_reload(link);
                return;
            }

            ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);
            return;
        }

        if (ngx_http_influencers_redis_redirect(slot, reply)) {
            return;
        }

        p = ngx_http_influencers_redis_text(text, sizeof(text),
                                            (u_char *) reply->str,
                                            reply->len);

        ngx_http_influencers_redis_log(link, &link->replies,
                                       "answered an error: %*s",
                                       (size_t) (p - text), text);

        ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);

        /* a cluster between two maps: the next operation finds it whole */

        if (ngx_http_influencers_redis_is(reply, "CLUSTERDOWN")
            || ngx_http_influencers_redis_is(reply, "TRYAGAIN"))
        {
            ngx_http_influencers_redis_remap(slot->fleet, 100);
        }

        /*
         * A server that is loading, a replica (a master that failed over),
         * one that wants AUTH again: another connection may find it, or
         * its successor, ready.
         */

        if (ngx_http_influencers_redis_is(reply, "LOADING")
            || ngx_http_influencers_redis_is(reply, "READONLY")
            || ngx_http_influencers_redis_is(reply, "MASTERDOWN")
            || ngx_http_influencers_redis_is(reply, "NOAUTH"))
        {
            ngx_http_influencers_redis_close(link);
        }

        return;
    }

    if (slot->script == NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM) {
        rc = ngx_http_influencers_redis_claimed(slot, reply);

    } else {
        rc = ngx_http_influencers_redis_finished(slot, reply);
    }

    if (link->conf->wait && !slot->nowait) {
        /* WAIT's answer settles it */
        slot->eval_rc = rc;
        slot->evaled = 1;
        return;
    }

    if (link->conf->wait) {
        rc = ngx_http_influencers_redis_unreplicated(slot, rc, 0);
    }

    ngx_http_influencers_redis_complete(slot, rc);
}


/*
 * WAIT's count: a write fewer replicas hold than wait= asks for may be
 * lost in a failover, so it is not taken.  A WAIT behind an EVALSHA that
 * Redis did not know, or that a cluster node redirected, counts nothing:
 * the command sent again has its own.
 */

static void
ngx_http_influencers_redis_waited(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_slot_t  *slot = data;

    long long                      acks;
    ngx_http_influencers_store_e   rc;

    if (ngx_http_influencers_redis_settled(slot) || !slot->evaled
        || io != &slot->link->io)
    {
        return;
    }

    if (reply == NULL) {
        ngx_http_influencers_redis_complete(slot,
                                           NGX_HTTP_INFLUENCERS_STORE_LOST);
        return;
    }

    acks = (reply->type == REDIS_REPLY_INTEGER) ? reply->integer : -1;

    rc = slot->eval_rc;

    if (acks < (long long) slot->link->conf->wait) {
        rc = ngx_http_influencers_redis_unreplicated(slot, rc, acks);
    }

    ngx_http_influencers_redis_complete(slot, rc);
}


/*
 * A claim this request made, or a finish, that too few replicas hold: the
 * claim is released and the request told Redis is unavailable; the
 * finish stays owed, and is sent again, with WAIT again.  What the claim
 * only read is as good as ever.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_redis_unreplicated(
    ngx_http_influencers_redis_slot_t *slot, ngx_http_influencers_store_e rc,
    long long acks)
{
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    if (rc != NGX_HTTP_INFLUENCERS_STORE_NEW
        && rc != NGX_HTTP_INFLUENCERS_STORE_RESEND
        && rc != NGX_HTTP_INFLUENCERS_STORE_FINISHED
        && rc != NGX_HTTP_INFLUENCERS_STORE_STALE)
    {
        return rc;
    }

    ngx_http_influencers_redis_log(link, &link->replicas,
                                   "had a %s on %L of the %ui replicas "
                                   "wait= asks for within %*s ms: not "
                                   "taken",
                                   slot->script
                                   == NGX_HTTP_INFLUENCERS_SCRIPT_CLAIM
                                   ? "claim" : "finish",
                                   acks < 0 ? 0 : acks, link->conf->wait,
                                   link->conf->wait_ms_len,
                                   link->conf->wait_ms);

    return NGX_HTTP_INFLUENCERS_STORE_LOST;
}


/*
 * 0: claimed with this request's job; {value}: taken over, the value's
 * job to be sent again; a value: busy, accepted, or another request's.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_redis_claimed(ngx_http_influencers_redis_slot_t *slot,
    redisReply *reply)
{
    redisReply                       *v;
    ngx_http_influencers_store_e   rc;
    ngx_http_influencers_entry_t      entry, *e;

    e = slot->op ? &slot->op->entry : &entry;

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        return NGX_HTTP_INFLUENCERS_STORE_NEW;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        return ngx_http_influencers_redis_decode(slot, (u_char *) reply->str,
                                                 reply->len, e);
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        v = reply->element[0];

        if (v->type == REDIS_REPLY_STRING) {
            rc = ngx_http_influencers_redis_decode(slot, (u_char *) v->str,
                                                   v->len, e);

            /* the claim the script wrote: this request's, in doubt */

            if (rc == NGX_HTTP_INFLUENCERS_STORE_BUSY
                && ngx_memcmp(v->str + 2, slot->token,
                              NGX_HTTP_INFLUENCERS_TOKEN_LEN)
                   == 0)
            {
                return NGX_HTTP_INFLUENCERS_STORE_RESEND;
            }

            if (rc == NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE) {
                return rc;
            }
        }
    }

    ngx_http_influencers_redis_log(slot->link, &slot->link->replies,
                                   "answered a claim with a reply that is "
                                   "not the script's (reply type %d)",
                                   reply->type);

    return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
}


static ngx_http_influencers_store_e
ngx_http_influencers_redis_finished(ngx_http_influencers_redis_slot_t *slot,
    redisReply *reply)
{
    if (reply->type == REDIS_REPLY_INTEGER) {
        if (reply->integer == 1) {
            return NGX_HTTP_INFLUENCERS_STORE_FINISHED;
        }

        if (reply->integer == 0) {
            return NGX_HTTP_INFLUENCERS_STORE_STALE;
        }
    }

    ngx_http_influencers_redis_log(slot->link, &slot->link->replies,
                                   "answered a finish with a reply that is "
                                   "not the script's (reply type %d)",
                                   reply->type);

    return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
}


/*
 * The outcome is known: settled with the zone at once, and the handler,
 * if any, called from the posted event.
 */

static void
ngx_http_influencers_redis_complete(ngx_http_influencers_redis_slot_t *slot,
    ngx_http_influencers_store_e rc)
{
    slot->rc = (rc == NGX_HTTP_INFLUENCERS_STORE_LOST)
               ? NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE : rc;
    slot->done = 1;

    if (slot->queued) {
        ngx_queue_remove(&slot->queue);
        slot->queued = 0;
    }

    if (slot->event.timer_set) {
        ngx_del_timer(&slot->event);
    }

    ngx_http_influencers_redis_settle(slot, rc);

    if (slot->op == NULL) {
        ngx_http_influencers_redis_slot_drop(slot);
        return;
    }

    slot->event.handler = ngx_http_influencers_redis_deliver;

    ngx_post_event(&slot->event, &ngx_posted_events);
}


/*
 * What Redis's answer (or its absence) leaves to set right, whoever waits
 * for it: a finish is paid, or stays owed; a claim that may have been
 * applied for a request that will not forward it is owed a release.
 */

static void
ngx_http_influencers_redis_settle(ngx_http_influencers_redis_slot_t *slot,
    ngx_http_influencers_store_e rc)
{
    ngx_http_influencers_zone_t  *zone;

    zone = slot->link->zone;

    if (slot->script == NGX_HTTP_INFLUENCERS_SCRIPT_FINISH) {

        if (rc == NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE
            || rc == NGX_HTTP_INFLUENCERS_STORE_LOST)
        {
            ngx_http_influencers_zone_unpaid(zone, &slot->ref);
            return;
        }

        if (rc == NGX_HTTP_INFLUENCERS_STORE_STALE && slot->fin.outcome == 'A'
            && slot->op == NULL)
        {
            ngx_http_influencers_zone_count(zone,
                                            NGX_HTTP_INFLUENCERS_COUNT_STALE);
            ngx_log_error(NGX_LOG_ERR, slot->link->log, 0,
                          "influencers: Redis at %V holds another job for "
                          "the key of an accepted one: it lost the key "
                          "(a restart without persistence, an eviction)",
                          &slot->link->conf->name);
        }

        ngx_http_influencers_zone_paid(zone, &slot->ref);
        return;
    }

    /*
     * A claim that may stand in Redis while nobody will forward its job:
     * its request is gone, or was told it failed.
     */

    if (rc == NGX_HTTP_INFLUENCERS_STORE_LOST
        || (slot->op == NULL
            && (rc == NGX_HTTP_INFLUENCERS_STORE_NEW
                || rc == NGX_HTTP_INFLUENCERS_STORE_RESEND)))
    {
        ngx_http_influencers_redis_release(slot);
    }
}


/*
 * A claim that may be this token's in Redis while nobody forwards its
 * job: a failure is owed, so that the key is released (or, for a job that
 * may have landed before, kept in doubt) before its lease ends.
 */

static void
ngx_http_influencers_redis_release(ngx_http_influencers_redis_slot_t *slot)
{
    ngx_http_influencers_finish_t       fin;
    ngx_http_influencers_finish_ref_t   ref;
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    if (link->exiting) {
        return;
    }

    ngx_memzero(&fin, sizeof(ngx_http_influencers_finish_t));
    ngx_memcpy(fin.key, slot->digest, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    fin.org_hash = slot->org_hash;
    ngx_memcpy(fin.token, slot->token, NGX_HTTP_INFLUENCERS_TOKEN_LEN);
    ngx_memcpy(fin.job_id, slot->job, NGX_HTTP_INFLUENCERS_ID_BYTES);
    fin.outcome = 'F';
    fin.ttl = link->zone->ttl;
    fin.expires = ngx_http_influencers_zone_wall_ms() + link->zone->lease;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: a claim nobody forwards, released");

    if (ngx_http_influencers_zone_owe(link->zone, &fin, 0, &ref) == NGX_OK) {
        ngx_http_influencers_zone_unpaid(link->zone, &ref);
    }
}


static void
ngx_http_influencers_redis_deliver(ngx_event_t *ev)
{
    ngx_http_influencers_redis_op_t    *op;
    ngx_http_influencers_redis_slot_t  *slot;

    slot = ev->data;
    op = slot->op;

    slot->op = NULL;
    op->rc = slot->rc;
    op->pending = NULL;

    ngx_http_influencers_redis_slot_drop(slot);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers redis: op done: %s",
                   ngx_http_influencers_redis_result_names[op->rc]);

    op->handler(op);
}


/*
 * No reply within the command timeout: a command sent on a connection
 * that is up means the connection is dead or Redis is frozen, and every
 * other operation on it would wait as long.  An operation still waiting
 * for its connection just gives up: the connect has its own timeout.
 */

static void
ngx_http_influencers_redis_timeout(ngx_event_t *ev)
{
    ngx_uint_t                          sent;
    ngx_http_influencers_redis_op_t    *op;
    ngx_http_influencers_redis_link_t  *link;
    ngx_http_influencers_redis_slot_t  *slot;

    slot = ev->data;
    link = slot->link;
    op = slot->op;
    sent = (slot->calls > 0);

    /* from now on, the reply (or the NULL one) is dropped */

    slot->done = 1;
    slot->rc = NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    slot->op = NULL;

    if (slot->queued) {
        ngx_queue_remove(&slot->queue);
        slot->queued = 0;

    } else if (sent) {
        ngx_http_influencers_redis_log(link, &link->down,
                                       "did not answer within %Mms: "
                                       "reconnecting", link->conf->timeout);

        ngx_http_influencers_redis_close(link);
    }

    ngx_http_influencers_redis_settle(slot,
                             sent ? NGX_HTTP_INFLUENCERS_STORE_LOST
                                  : NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);

    ngx_http_influencers_redis_slot_drop(slot);

    if (op == NULL) {
        return;
    }

    op->rc = NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
    op->pending = NULL;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, op->log, 0,
                   "influencers redis: op timed out");

    op->handler(op);
}


static ngx_http_influencers_redis_slot_t *
ngx_http_influencers_redis_slot(ngx_http_influencers_redis_fleet_t *fleet)
{
    ngx_uint_t                           i;
    ngx_http_influencers_redis_slot_t   *slot;
    ngx_http_influencers_redis_chunk_t  *chunk;

    if (fleet->free == NULL) {

        /* as many as ever were pending at once: allocated once, reused */

        chunk = ngx_alloc(sizeof(ngx_http_influencers_redis_chunk_t),
                          fleet->log);
        if (chunk == NULL) {
            return NULL;
        }

        chunk->next = fleet->chunks;
        fleet->chunks = chunk;

        for (i = 0; i < NGX_HTTP_INFLUENCERS_SLOTS; i++) {
            slot = &chunk->slots[i];
            slot->fleet = fleet;
            slot->op = NULL;
            slot->next = fleet->free;
            fleet->free = slot;
        }
    }

    slot = fleet->free;
    fleet->free = slot->next;

    ngx_memzero(&slot->event, sizeof(ngx_event_t));
    slot->event.data = slot;
    slot->event.log = fleet->log;
    slot->event.handler = ngx_http_influencers_redis_timeout;

    slot->op = NULL;
    slot->link = NULL;
    slot->hslot = 0;
    slot->next = NULL;
    slot->ref.no = 0;
    slot->calls = 0;
    slot->evaled = 0;
    slot->nowait = 0;
    slot->asking = 0;
    slot->redirects = 0;
    slot->queued = 0;
    slot->done = 0;
    slot->eval = 0;
    slot->expired = 0;

    return slot;
}


/* a slot nobody waits for: freed by the last reply it awaits, if any */

static void
ngx_http_influencers_redis_slot_drop(ngx_http_influencers_redis_slot_t *slot)
{
    if (slot->calls) {
        slot->expired = 1;
        return;
    }

    ngx_http_influencers_redis_slot_free(slot);
}


static void
ngx_http_influencers_redis_slot_free(ngx_http_influencers_redis_slot_t *slot)
{
    ngx_http_influencers_redis_fleet_t  *fleet;

    fleet = slot->fleet;

    slot->next = fleet->free;
    fleet->free = slot;
}


/*
 * Every worker's timer: finishes the zone owes Redis that are due and not
 * being sent, a batch at a time, each to its key's server.
 */

static void
ngx_http_influencers_redis_owed_handler(ngx_event_t *ev)
{
    ngx_uint_t                           i, n, dropped;
    ngx_http_influencers_redis_link_t   *link;
    ngx_http_influencers_redis_fleet_t  *fleet;
    ngx_http_influencers_finish_t        fin[NGX_HTTP_INFLUENCERS_OWED_BATCH];
    ngx_http_influencers_finish_ref_t    ref[NGX_HTTP_INFLUENCERS_OWED_BATCH];

    fleet = ev->data;

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, NGX_HTTP_INFLUENCERS_OWED_TIMER);
    }

    link = fleet->links[0];

    if (fleet->map == NULL
        && link->state == NGX_HTTP_INFLUENCERS_LINK_BACKOFF
        && (ngx_msec_int_t) (link->retry_at - ngx_current_msec) > 0)
    {
        return;
    }

    n = ngx_http_influencers_zone_owed(fleet->zone, fin, ref,
                                       NGX_HTTP_INFLUENCERS_OWED_BATCH,
                                       2 * fleet->conf->timeout
                                       + fleet->conf->tls.connect_timeout,
                                       &dropped);

    if (dropped) {
        ngx_log_error(NGX_LOG_ERR, fleet->log, 0,
                      "influencers: %ui finishes owed to Redis at %V were "
                      "given up, their entries expired unsent",
                      dropped, &fleet->conf->name);
    }

    if (n) {
        ngx_log_error(NGX_LOG_INFO, fleet->log, 0,
                      "influencers: %ui finishes owed to Redis at %V sent "
                      "again", n, &fleet->conf->name);
    }

    for (i = 0; i < n; i++) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, fleet->log, 0,
                       "influencers redis: an owed finish sent again "
                       "(try %d)", (int) fin[i].tries + 1);

        /* one server: the rest stay owed, for the next round */

        if (ngx_http_influencers_redis_send_finish(fleet, NULL, &fin[i],
                                                   &ref[i])
            != NGX_OK
            && fleet->map == NULL)
        {
            for (i++; i < n; i++) {
                ngx_http_influencers_zone_unpaid(fleet->zone, &ref[i]);
            }

            return;
        }
    }
}


/*
 * The link of the server a slot is on; a slot the map does not know yet
 * goes to any node that is up (it answers MOVED with the right one), and
 * the map is read again.
 */

static ngx_http_influencers_redis_link_t *
ngx_http_influencers_redis_route(ngx_http_influencers_redis_fleet_t *fleet,
    ngx_uint_t hslot)
{
    ngx_uint_t                          n;
    ngx_http_influencers_redis_link_t  *link;

    if (fleet->map == NULL) {
        return fleet->links[0];
    }

    n = fleet->map[hslot];

    if (n != NGX_HTTP_INFLUENCERS_CLUSTER_NONE) {
        return fleet->links[n];
    }

    ngx_http_influencers_redis_remap(fleet, 0);

    link = ngx_http_influencers_redis_up(fleet);

    return link ? link : fleet->links[fleet->asked++ % fleet->nlinks];
}


/* a node that is up, the one asked last first */

static ngx_http_influencers_redis_link_t *
ngx_http_influencers_redis_up(ngx_http_influencers_redis_fleet_t *fleet)
{
    ngx_uint_t                          i;
    ngx_http_influencers_redis_link_t  *link;

    for (i = 0; i < fleet->nlinks; i++) {
        link = fleet->links[(fleet->asked + i) % fleet->nlinks];

        if (link->state == NGX_HTTP_INFLUENCERS_LINK_READY) {
            return link;
        }
    }

    return NULL;
}


/* the link of a node named by the cluster (ip, port), new if need be */

static ngx_http_influencers_redis_link_t *
ngx_http_influencers_redis_node(ngx_http_influencers_redis_fleet_t *fleet,
    u_char *ip, size_t len, ngx_int_t port)
{
    ngx_uint_t                          i;
    socklen_t                           socklen;
    ngx_sockaddr_t                      sa;
    ngx_http_influencers_redis_addr_t  *addr;
    ngx_http_influencers_redis_link_t  *link;

    if (ngx_http_influencers_redis_parse_addr(ip, len, port, &sa, &socklen)
        != NGX_OK)
    {
        return NULL;
    }

    for (i = 0; i < fleet->nlinks; i++) {
        link = fleet->links[i];
        addr = link->io.addr;

        if (ngx_cmp_sockaddr(addr->sockaddr, addr->socklen, &sa.sockaddr,
                             socklen, 1)
            == NGX_OK)
        {
            return link;
        }
    }

    link = ngx_http_influencers_redis_link(fleet, NULL);
    if (link == NULL) {
        ngx_log_error(NGX_LOG_ERR, fleet->log, 0,
                      "influencers: Redis cluster at %V has more than %d "
                      "nodes, or no memory for another",
                      &fleet->conf->name, NGX_HTTP_INFLUENCERS_CLUSTER_NODES);
        return NULL;
    }

    ngx_http_influencers_redis_set_addr(link, &sa, socklen, ip, len);

    return link;
}


/*
 * -MOVED <slot> <ip>:<port>: the slot is served there from now on; -ASK:
 * for this command only, after ASKING.  The operation follows, within its
 * own timeout; a MOVED also has the whole map read again, since a
 * reshard or a failover moves more than one slot.
 */

static ngx_uint_t
ngx_http_influencers_redis_redirect(ngx_http_influencers_redis_slot_t *slot,
    redisReply *reply)
{
    u_char                              *p, *last, *colon, *host;
    ngx_uint_t                           ask;
    ngx_http_influencers_redis_link_t   *link;
    ngx_http_influencers_redis_fleet_t  *fleet;

    fleet = slot->fleet;

    if (fleet->map == NULL) {
        return 0;
    }

    if (ngx_http_influencers_redis_is(reply, "MOVED")) {
        ask = 0;

    } else if (ngx_http_influencers_redis_is(reply, "ASK")) {
        ask = 1;

    } else {
        return 0;
    }

    p = (u_char *) reply->str;
    last = p + reply->len;

    /* the word, the slot, then the address */

    p = ngx_strlchr(p, last, ' ');
    host = p ? ngx_strlchr(p + 1, last, ' ') : NULL;
    colon = NULL;

    if (host) {
        host++;

        for (p = last - 1; p > host; p--) {
            if (*p == ':') {
                colon = p;
                break;
            }
        }
    }

    link = colon ? ngx_http_influencers_redis_node(fleet, host, colon - host,
                                          ngx_atoi(colon + 1,
                                                   last - colon - 1))
                 : NULL;

    if (link == NULL || slot->redirects == NGX_HTTP_INFLUENCERS_REDIRECTS_MAX)
    {
        ngx_http_influencers_redis_log(slot->link, &slot->link->replies,
                                       "redirected an operation %s: %*s",
                                       link ? "too many times"
                                            : "to an address it cannot reach",
                                       (size_t) ngx_min(reply->len, 64),
                                       reply->str);
        ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);
        return 1;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, fleet->log, 0,
                   "influencers redis: %s slot %ui to %V",
                   ask ? "ASK" : "MOVED", slot->hslot, &link->io.addr->name);

    slot->redirects++;
    slot->asking = ask;

    if (!ask) {
        fleet->map[slot->hslot] = (uint16_t) link->index;
        ngx_http_influencers_redis_remap(fleet, 0);
    }

    slot->link = link;

    if (ngx_http_influencers_redis_attach(slot) != NGX_OK
        || ngx_http_influencers_redis_dispatch(slot) != NGX_OK)
    {
        ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);
    }

    return 1;
}


static void
ngx_http_influencers_redis_asked(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    /* ASKING answers +OK; the command behind it has the answer */

    (void) ngx_http_influencers_redis_settled(data);
}


/* the map read again, after delay, and at most every 100ms */

static void
ngx_http_influencers_redis_remap(ngx_http_influencers_redis_fleet_t *fleet,
    ngx_msec_t delay)
{
    ngx_msec_t  elapsed;

    if (fleet->map == NULL || fleet->exiting || fleet->refreshing
        || fleet->refresh.timer_set || fleet->refresh.posted)
    {
        return;
    }

    elapsed = ngx_current_msec - fleet->refreshed;

    if (delay < 100 && elapsed < 100) {
        delay = 100 - elapsed;
    }

    if (delay == 0) {
        ngx_post_event(&fleet->refresh, &ngx_posted_events);
        return;
    }

    ngx_add_timer(&fleet->refresh, delay);
}


/*
 * The map, asked of a node that is up (or, while none is, of the next
 * one, which is connected for it): CLUSTER SHARDS (Redis 7), or CLUSTER
 * SLOTS of a server that does not know it.  A node that does not answer
 * has the next asked.  Slots no answer names keep the node they had.
 */

static void
ngx_http_influencers_redis_refresh(ngx_event_t *ev)
{
    const char                          *argv[2];
    size_t                               argvlen[2];
    ngx_http_influencers_redis_link_t   *link;
    ngx_http_influencers_redis_fleet_t  *fleet;

    fleet = ev->data;

    if (fleet->exiting || fleet->refreshing) {
        return;
    }

    link = ngx_http_influencers_redis_up(fleet);

    if (link == NULL) {

        /* none is up: the next is connected, and asked once it is */

        link = fleet->links[fleet->asked++ % fleet->nlinks];

        if (link->state == NGX_HTTP_INFLUENCERS_LINK_IDLE
            || (link->state == NGX_HTTP_INFLUENCERS_LINK_BACKOFF
                && (ngx_msec_int_t) (link->retry_at - ngx_current_msec) <= 0))
        {
            if (link->timer.timer_set) {
                ngx_del_timer(&link->timer);
            }

            (void) ngx_http_influencers_redis_connect(link);
        }

        ngx_http_influencers_redis_remap(fleet, 100);
        return;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = sizeof("CLUSTER") - 1;
    argv[1] = fleet->slots_only ? "SLOTS" : "SHARDS";
    argvlen[1] = ngx_strlen(argv[1]);

    if (ngx_http_influencers_redis_io_send(&link->io, 2, argv, argvlen,
                                    ngx_http_influencers_redis_slots_handler,
                                    fleet)
        != NGX_OK)
    {
        ngx_http_influencers_redis_remap(fleet, 100);
        return;
    }

    fleet->refreshing = 1;
    fleet->refreshed = ngx_current_msec;
}


static void
ngx_http_influencers_redis_slots_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_fleet_t  *fleet = data;

    ngx_uint_t  i, n;

    fleet->refreshing = 0;

    if (fleet->exiting) {
        return;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && !fleet->slots_only) {
        /* before Redis 7: CLUSTER SLOTS, at once */
        fleet->slots_only = 1;
        ngx_http_influencers_redis_remap(fleet, 0);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0)
    {
        /* another node, soon */
        fleet->asked++;
        ngx_http_influencers_redis_remap(fleet, 100);
        return;
    }

    n = 0;

    for (i = 0; i < reply->elements; i++) {
        n += fleet->slots_only
             ? ngx_http_influencers_redis_slots_range(fleet,
                                                      reply->element[i])
             : ngx_http_influencers_redis_shard(fleet, reply->element[i]);
    }

    fleet->mapped = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, fleet->log, 0,
                   "influencers redis: cluster map read from %V: %ui slots",
                   &io->addr->name, n);
}


/* CLUSTER SLOTS: [from, to, [ip, port, id...], replicas...] */

static ngx_uint_t
ngx_http_influencers_redis_slots_range(
    ngx_http_influencers_redis_fleet_t *fleet, redisReply *range)
{
    redisReply  *node;

    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
        || range->element[0]->type != REDIS_REPLY_INTEGER
        || range->element[1]->type != REDIS_REPLY_INTEGER
        || range->element[2]->type != REDIS_REPLY_ARRAY
        || range->element[2]->elements < 2
        || range->element[2]->element[0]->type != REDIS_REPLY_STRING
        || range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return 0;
    }

    node = range->element[2];

    return ngx_http_influencers_redis_assign(fleet,
                                             range->element[0]->integer,
                                             range->element[1]->integer,
                                             node->element[0],
                                             node->element[1]->integer);
}


/*
 * CLUSTER SHARDS: a shard is a flat map, "slots" [from, to, ...] and
 * "nodes" [flat maps: "ip", "port", "tls-port", "role", "health"...]; its
 * slots go to its primary that is online (over TLS, at its TLS port).
 */

static ngx_uint_t
ngx_http_influencers_redis_shard(ngx_http_influencers_redis_fleet_t *fleet,
    redisReply *shard)
{
    long long    port;
    ngx_uint_t   i, j, n, master, down;
    redisReply  *slots, *nodes, *node, *ip, *key, *value;
    const char  *port_name;

    if (shard->type != REDIS_REPLY_ARRAY) {
        return 0;
    }

    slots = ngx_http_influencers_redis_field(shard, "slots");
    nodes = ngx_http_influencers_redis_field(shard, "nodes");

    if (slots == NULL || slots->type != REDIS_REPLY_ARRAY
        || nodes == NULL || nodes->type != REDIS_REPLY_ARRAY)
    {
        return 0;
    }

    port_name = fleet->conf->tls.ssl ? "tls-port" : "port";

    for (i = 0; i < nodes->elements; i++) {
        node = nodes->element[i];

        if (node->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        ip = NULL;
        port = 0;
        master = 0;
        down = 0;

        for (j = 0; j + 1 < node->elements; j += 2) {
            key = node->element[j];
            value = node->element[j + 1];

            if (key->type != REDIS_REPLY_STRING) {
                continue;
            }

            if (value->type == REDIS_REPLY_INTEGER) {
                if (ngx_http_influencers_redis_word(key, port_name)) {
                    port = value->integer;
                }

                continue;
            }

            if (value->type != REDIS_REPLY_STRING) {
                continue;
            }

            if (ngx_http_influencers_redis_word(key, "ip")) {
                ip = value;

            } else if (ngx_http_influencers_redis_word(key, "role")) {
                master = ngx_http_influencers_redis_word(value, "master");

            } else if (ngx_http_influencers_redis_word(key, "health")) {
                down = !ngx_http_influencers_redis_word(value, "online");
            }
        }

        if (!master || down || ip == NULL || port == 0) {
            continue;
        }

        n = 0;

        for (j = 0; j + 1 < slots->elements; j += 2) {
            if (slots->element[j]->type == REDIS_REPLY_INTEGER
                && slots->element[j + 1]->type == REDIS_REPLY_INTEGER)
            {
                n += ngx_http_influencers_redis_assign(fleet,
                                             slots->element[j]->integer,
                                             slots->element[j + 1]->integer,
                                             ip, port);
            }
        }

        return n;
    }

    return 0;
}


static redisReply *
ngx_http_influencers_redis_field(redisReply *map, const char *name)
{
    ngx_uint_t  i;

    for (i = 0; i + 1 < map->elements; i += 2) {
        if (map->element[i]->type == REDIS_REPLY_STRING
            && ngx_http_influencers_redis_word(map->element[i], name))
        {
            return map->element[i + 1];
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_influencers_redis_word(redisReply *reply, const char *word)
{
    size_t  len;

    len = ngx_strlen(word);

    return reply->len == len && ngx_strncmp(reply->str, word, len) == 0;
}


/* slots from..to are the node's at ip:port */

static ngx_uint_t
ngx_http_influencers_redis_assign(ngx_http_influencers_redis_fleet_t *fleet,
    long long from, long long to, redisReply *ip, long long port)
{
    long long                           s;
    ngx_http_influencers_redis_link_t  *link;

    if (from < 0 || from > to || to >= NGX_HTTP_INFLUENCERS_CLUSTER_SLOTS) {
        return 0;
    }

    if (port < 1 || port > 65535) {
        return 0;
    }

    link = ngx_http_influencers_redis_node(fleet, (u_char *) ip->str, ip->len,
                                           (ngx_int_t) port);
    if (link == NULL) {
        return 0;
    }

    for (s = from; s <= to; s++) {
        fleet->map[s] = (uint16_t) link->index;
    }

    return (ngx_uint_t) (to - from + 1);
}


/*
 * A connect: to the address configured, or to the master the sentinels
 * name, asked first.
 */

static ngx_int_t
ngx_http_influencers_redis_connect(ngx_http_influencers_redis_link_t *link)
{
    ngx_http_influencers_redis_conf_t  *conf;

    conf = link->conf;

    link->timer.handler = ngx_http_influencers_redis_connect_timeout;

    if (conf->sentinels) {
        link->asked = 0;
        return ngx_http_influencers_redis_sentinel_ask(link);
    }

    if (ngx_http_influencers_redis_connect_to(link, link->io.addr) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_add_timer(&link->timer, conf->tls.connect_timeout);

    return NGX_OK;
}


/*
 * AUTH, SELECT, ROLE (a master named by the sentinels must still be one)
 * and the scripts go at once, behind the connect and its TLS handshake;
 * the operations wait for their replies.
 */

static ngx_int_t
ngx_http_influencers_redis_connect_to(ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_addr_t *addr)
{
    ngx_uint_t                          i, n;
    const char                         *argv[3];
    size_t                              argvlen[3];
    ngx_http_influencers_redis_conf_t  *conf;

    conf = link->conf;
    link->io.addr = addr;

    if (ngx_http_influencers_redis_io_connect(&link->io) != NGX_OK) {
        ngx_http_influencers_redis_log(link, &link->down,
                                       "is unreachable%s%V: %*s",
                                       link->conf->sentinels ? " at " : "",
                                       ngx_http_influencers_redis_where(link,
                                                                     addr),
                                       link->io.error_len, link->io.error);
        ngx_http_influencers_redis_fail(link);
        return NGX_ERROR;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: connecting to %V%s%s", &addr->name,
                   conf->password.len ? ", AUTH" : "",
                   conf->db ? ", SELECT" : "");

    link->state = NGX_HTTP_INFLUENCERS_LINK_CONNECTING;
    link->handshake = 0;

    if (conf->password.len) {
        n = 0;
        argv[n] = "AUTH";
        argvlen[n++] = sizeof("AUTH") - 1;

        if (conf->user.len) {
            argv[n] = (const char *) conf->user.data;
            argvlen[n++] = conf->user.len;
        }

        argv[n] = (const char *) conf->password.data;
        argvlen[n++] = conf->password.len;

        if (ngx_http_influencers_redis_command(link,
                                       ngx_http_influencers_redis_auth_handler,
                                       n, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    if (conf->db) {
        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) conf->db_text.data;
        argvlen[1] = conf->db_text.len;

        if (ngx_http_influencers_redis_command(link,
                                     ngx_http_influencers_redis_select_handler,
                                     2, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    if (conf->sentinels) {
        argv[0] = "ROLE";
        argvlen[0] = sizeof("ROLE") - 1;

        if (ngx_http_influencers_redis_command(link,
                                       ngx_http_influencers_redis_role_handler,
                                       1, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    argv[0] = "SCRIPT";
    argvlen[0] = sizeof("SCRIPT") - 1;
    argv[1] = "LOAD";
    argvlen[1] = sizeof("LOAD") - 1;

    for (i = 0; i < 2; i++) {
        argv[2] = (const char *) ngx_http_influencers_redis_scripts[i].data;
        argvlen[2] = ngx_http_influencers_redis_scripts[i].len;

        if (ngx_http_influencers_redis_command(link,
                                       ngx_http_influencers_redis_load_handler,
                                       3, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                  "influencers: no memory for a command to Redis");

    /* closed() starts the backoff */

    ngx_http_influencers_redis_close(link);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_influencers_redis_command(ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_io_reply_pt handler, int argc,
    const char **argv, const size_t *argvlen)
{
    if (ngx_http_influencers_redis_io_send(&link->io, argc, argv, argvlen,
                                           handler, link)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    link->handshake++;

    return NGX_OK;
}


/*
 * The handshake's replies.  NULL: the connection is going, closed() deals
 * with it.
 */

static void
ngx_http_influencers_redis_auth_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_step(data, reply, 0, "AUTH", NULL);
}


static void
ngx_http_influencers_redis_select_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    ngx_http_influencers_redis_step(link, reply, 0, "SELECT",
                                    &link->conf->db_text);
}


static void
ngx_http_influencers_redis_load_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_step(data, reply, 1, "SCRIPT LOAD", NULL);
}


/* the master the sentinels named is a replica now: they are asked again */

static void
ngx_http_influencers_redis_role_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    redisReply  *role;

    if (reply == NULL
        || link->state != NGX_HTTP_INFLUENCERS_LINK_CONNECTING)
    {
        return;
    }

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role == NULL || role->type != REDIS_REPLY_STRING || role->len != 6
        || ngx_strncmp(role->str, "master", 6) != 0)
    {
        ngx_http_influencers_redis_log(link, &link->refused,
                                       "named at %V is not a master: "
                                       "asking the sentinels again",
                                       &link->master.name);
        link->next++;
        ngx_http_influencers_redis_close(link);
        return;
    }

    if (--link->handshake == 0) {
        ngx_http_influencers_redis_ready(link);
    }
}


/*
 * One step of the handshake answered: the link is ready after the last,
 * or closed, saying what Redis refused.  A script's load is accepted only
 * if Redis answered with its digest.
 */

static void
ngx_http_influencers_redis_step(ngx_http_influencers_redis_link_t *link,
    redisReply *reply, ngx_uint_t script, const char *what, ngx_str_t *arg)
{
    u_char       *p;
    ngx_int_t     rc;
    ngx_uint_t    secret;
    ngx_str_t     none = ngx_null_string;
    u_char        text[NGX_HTTP_INFLUENCERS_REDIS_TEXT];

    if (reply == NULL
        || link->state != NGX_HTTP_INFLUENCERS_LINK_CONNECTING)
    {
        return;
    }

    if (script) {
        rc = ngx_http_influencers_redis_loaded(reply);

    } else {
        rc = (reply->type == REDIS_REPLY_ERROR) ? NGX_ERROR : NGX_OK;
    }

    secret = (ngx_strcmp(what, "AUTH") == 0);

    if (rc != NGX_OK) {

        if (reply->type == REDIS_REPLY_ERROR && !secret) {
            p = ngx_http_influencers_redis_text(text, sizeof(text),
                                                (u_char *) reply->str,
                                                reply->len);

        } else if (reply->type == REDIS_REPLY_ERROR) {

            /* its text may echo the password: only a code Redis uses */

            p = ngx_cpymem(text, ngx_http_influencers_redis_code(reply),
                           ngx_strlen(ngx_http_influencers_redis_code(reply)));

        } else {
            p = ngx_cpymem(text, "an unexpected reply",
                           sizeof("an unexpected reply") - 1);
        }

        if (arg == NULL) {
            arg = &none;
        }

        ngx_http_influencers_redis_log(link, &link->refused,
                                       "refused %s%s%V: %*s", what,
                                       arg->len ? " " : "", arg,
                                       (size_t) (p - text), text);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                       "influencers redis: %s refused, closing", what);

        ngx_http_influencers_redis_close(link);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: %s accepted", what);

    if (--link->handshake == 0) {
        ngx_http_influencers_redis_ready(link);
    }
}


/* after NOSCRIPT: both scripts again, for the operations to come */

static void
ngx_http_influencers_redis_reload(ngx_http_influencers_redis_link_t *link)
{
    ngx_uint_t   i;
    size_t       argvlen[3];
    const char  *argv[3];

    if (link->reloading) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: loading the scripts again");

    argv[0] = "SCRIPT";
    argvlen[0] = sizeof("SCRIPT") - 1;
    argv[1] = "LOAD";
    argvlen[1] = sizeof("LOAD") - 1;

    for (i = 0; i < 2; i++) {
        argv[2] = (const char *) ngx_http_influencers_redis_scripts[i].data;
        argvlen[2] = ngx_http_influencers_redis_scripts[i].len;

        if (ngx_http_influencers_redis_io_send(&link->io, 3, argv, argvlen,
                                     ngx_http_influencers_redis_reload_handler,
                                     link)
            != NGX_OK)
        {
            return;
        }
    }

    link->reloading = 1;
}


static void
ngx_http_influencers_redis_reload_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    if (reply == NULL) {
        return;
    }

    /* the operations use EVAL on their NOSCRIPT: nothing is lost */

    link->reloading = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: SCRIPT LOAD again %s",
                   ngx_http_influencers_redis_loaded(reply) == NGX_OK
                   ? "accepted" : "refused");

    if (ngx_http_influencers_redis_loaded(reply) != NGX_OK) {
        ngx_http_influencers_redis_log(link, &link->replies,
                                       "refused SCRIPT LOAD (reply type %d)",
                                       reply->type);
    }
}


/* SCRIPT LOAD answers the SHA1 of the script: one of ours */

static ngx_int_t
ngx_http_influencers_redis_loaded(redisReply *reply)
{
    ngx_uint_t  i;

    if (reply->type != REDIS_REPLY_STRING || reply->len != 2 * 20) {
        return NGX_ERROR;
    }

    for (i = 0; i < 2; i++) {
        if (ngx_strncasecmp((u_char *) reply->str,
                            ngx_http_influencers_redis_sha[i], 2 * 20)
            == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


static void
ngx_http_influencers_redis_ready(ngx_http_influencers_redis_link_t *link)
{
    ngx_queue_t                        *q;
    ngx_http_influencers_redis_slot_t  *slot;

    link->state = NGX_HTTP_INFLUENCERS_LINK_READY;
    link->backoff = NGX_HTTP_INFLUENCERS_BACKOFF_MIN;

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (link->failing) {
        link->failing = 0;
        ngx_log_error(NGX_LOG_NOTICE, link->log, 0,
                      "influencers: Redis at %V is reachable again%s%V",
                      link->name, link->conf->sentinels ? ", at " : "",
                      ngx_http_influencers_redis_where(link, link->io.addr));
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: connected to %V", &link->io.addr->name);

    ngx_http_influencers_redis_info(link);

    if (!link->fleet->mapped) {
        ngx_http_influencers_redis_remap(link->fleet, 0);
    }

    while (!ngx_queue_empty(&link->waiting)) {
        q = ngx_queue_head(&link->waiting);
        slot = ngx_queue_data(q, ngx_http_influencers_redis_slot_t, queue);

        ngx_queue_remove(q);
        slot->queued = 0;

        if (ngx_http_influencers_redis_send(slot) != NGX_OK) {
            ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);
        }
    }
}


/*
 * What Redis says of itself, on every connection, behind the operations:
 * whether it keeps what it acknowledged (AOF, no eviction), and whether
 * it is the server it was (its run_id).  A server that refuses INFO (an
 * ACL) is only said to.
 */

static void
ngx_http_influencers_redis_info(ngx_http_influencers_redis_link_t *link)
{
    const char  *argv[1];
    size_t       argvlen[1];

    argv[0] = "INFO";
    argvlen[0] = sizeof("INFO") - 1;

    if (ngx_http_influencers_redis_io_send(&link->io, 1, argv, argvlen,
                                       ngx_http_influencers_redis_info_handler,
                                       link)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "influencers: no memory for INFO to Redis");
    }
}


static void
ngx_http_influencers_redis_info_handler(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    ngx_str_t                           run_id, aof, policy;
    ngx_http_influencers_redis_info_t   info;

    if (reply == NULL || link->exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_STRING) {
        ngx_http_influencers_redis_log(link, &link->replies,
                                       "refused INFO: whether it keeps "
                                       "what it acknowledged is not known");
        return;
    }

    ngx_memzero(&info, sizeof(ngx_http_influencers_redis_info_t));

    /*
     * A master the sentinels move is another server, with another run_id,
     * and no restart: only a server at one address is followed so.
     */

    if (link->conf->sentinels == NULL && link->conf->cluster == NULL
        && ngx_http_influencers_redis_info_field(reply, "run_id", &run_id)
           == NGX_OK
        && run_id.len == sizeof(info.run_id))
    {
        ngx_memcpy(info.run_id, run_id.data, sizeof(info.run_id));
    }

    info.aof = ngx_http_influencers_redis_info_field(reply, "aof_enabled",
                                                     &aof)
               == NGX_OK
               && aof.len == 1 && aof.data[0] == '1';

    if (ngx_http_influencers_redis_info_field(reply, "maxmemory_policy",
                                              &policy)
        != NGX_OK)
    {
        ngx_str_set(&policy, "unknown");
    }

    info.noeviction = (policy.len == sizeof("noeviction") - 1
                       && ngx_strncmp(policy.data, "noeviction",
                                      policy.len) == 0);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: INFO: aof %d, maxmemory-policy %V, "
                   "run_id %s", (int) info.aof, &policy,
                   info.run_id[0] ? "read" : "none");

    ngx_http_influencers_zone_redis(link->zone, link->name, &info,
                                    &policy, link->log);
}


/* "name:value\r\n" in INFO's text; the value's bytes are printable */

static ngx_int_t
ngx_http_influencers_redis_info_field(redisReply *reply, const char *name,
    ngx_str_t *value)
{
    u_char  *p, *last, *end;
    size_t   len;

    len = ngx_strlen(name);
    p = (u_char *) reply->str;
    last = p + reply->len;

    while (p < last) {
        end = ngx_strlchr(p, last, '\n');

        if (end == NULL) {
            end = last;
        }

        if ((size_t) (end - p) > len && p[len] == ':'
            && ngx_strncmp(p, name, len) == 0)
        {
            value->data = p + len + 1;
            value->len = end - value->data;

            if (value->len && value->data[value->len - 1] == '\r') {
                value->len--;
            }

            for (p = value->data; p < value->data + value->len; p++) {
                if (*p < 0x21 || *p > 0x7e) {
                    return NGX_ERROR;
                }
            }

            return NGX_OK;
        }

        p = end + 1;
    }

    return NGX_DECLINED;
}


/*
 * Sentinel: the master's address is asked of one sentinel at a time (the
 * one that answered last first), AUTH first where set; the same
 * connection then subscribes to +switch-master, so that a failover is
 * followed at once, not only at the old master's first error.
 */

static ngx_int_t
ngx_http_influencers_redis_sentinel_ask(
    ngx_http_influencers_redis_link_t *link)
{
    ngx_uint_t                          n;
    const char                         *argv[4];
    size_t                              argvlen[4];
    ngx_http_influencers_redis_conf_t  *conf;
    ngx_http_influencers_redis_addr_t  *sentinels;

    conf = link->conf;
    sentinels = conf->sentinels->elts;

    /* a subscription of an earlier round goes: this one asks afresh */

    link->state = NGX_HTTP_INFLUENCERS_LINK_IDLE;
    ngx_http_influencers_redis_io_close(&link->sentinel, NULL);
    link->state = NGX_HTTP_INFLUENCERS_LINK_ASKING;

    while (link->asked < conf->sentinels->nelts) {
        link->asked++;
        link->sentinel.addr = &sentinels[link->next % conf->sentinels->nelts];

        if (ngx_http_influencers_redis_io_connect(&link->sentinel) == NGX_OK)
        {
            break;
        }

        ngx_http_influencers_redis_log(link, &link->down,
                                       "cannot be found: sentinel %V: %*s",
                                       &link->sentinel.addr->name,
                                       link->sentinel.error_len,
                                       link->sentinel.error);
        link->next++;
    }

    if (link->sentinel.state == NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE) {
        ngx_http_influencers_redis_fail(link);
        return NGX_ERROR;
    }

    if (conf->sentinel_password.len) {
        n = 0;
        argv[n] = "AUTH";
        argvlen[n++] = sizeof("AUTH") - 1;

        if (conf->sentinel_user.len) {
            argv[n] = (const char *) conf->sentinel_user.data;
            argvlen[n++] = conf->sentinel_user.len;
        }

        argv[n] = (const char *) conf->sentinel_password.data;
        argvlen[n++] = conf->sentinel_password.len;

        if (ngx_http_influencers_redis_io_send(&link->sentinel, n, argv,
                                               argvlen,
                              ngx_http_influencers_redis_sentinel_auth_handler,
                              link)
            != NGX_OK)
        {
            goto failed;
        }
    }

    argv[0] = "SENTINEL";
    argvlen[0] = sizeof("SENTINEL") - 1;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (const char *) conf->master.data;
    argvlen[2] = conf->master.len;

    if (ngx_http_influencers_redis_io_send(&link->sentinel, 3, argv, argvlen,
                            ngx_http_influencers_redis_sentinel_master_handler,
                            link)
        != NGX_OK)
    {
        goto failed;
    }

    if (!link->timer.timer_set) {
        ngx_add_timer(&link->timer, 2 * conf->tls.connect_timeout);
    }

    return NGX_OK;

failed:

    ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                  "influencers: no memory for a command to a sentinel");

    ngx_http_influencers_redis_io_close(&link->sentinel, NULL);

    return NGX_ERROR;
}


static void
ngx_http_influencers_redis_sentinel_auth_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    /* its text may echo the password: only a code Redis uses */

    ngx_http_influencers_redis_log(link, &link->refused,
                                   "cannot be found: sentinel %V refused "
                                   "AUTH: %s", &io->addr->name,
                                   ngx_http_influencers_redis_code(reply));

    /* the question behind it is answered NULL, and the next one asked */

    ngx_http_influencers_redis_io_close(io, NULL);
}


/* [ip, port], or nil: the master is not known to this sentinel */

static void
ngx_http_influencers_redis_sentinel_master_handler(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    socklen_t        socklen;
    const char      *argv[2];
    size_t           argvlen[2];
    ngx_sockaddr_t   sa;

    if (reply == NULL || link->state != NGX_HTTP_INFLUENCERS_LINK_ASKING) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* NOAUTH, an ACL: only Redis's code, its text may echo a secret */

        ngx_http_influencers_redis_log(link, &link->refused,
                                       "cannot be found: sentinel %V refused "
                                       "SENTINEL get-master-addr-by-name: %s",
                                       &io->addr->name,
                                       ngx_http_influencers_redis_code(reply));
        ngx_http_influencers_redis_io_close(io, NULL);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[0]->len == 0
        || reply->element[0]->len >= NGX_SOCKADDR_STRLEN - 8)
    {
        ngx_http_influencers_redis_log(link, &link->down,
                                       "cannot be found: sentinel %V does "
                                       "not name it (reply type %d)",
                                       &io->addr->name, reply->type);
        ngx_http_influencers_redis_io_close(io, NULL);
        return;
    }

    if (ngx_http_influencers_redis_parse_addr(
                                      (u_char *) reply->element[0]->str,
                                      reply->element[0]->len,
                                      ngx_atoi((u_char *) reply->element[1]->str,
                                               reply->element[1]->len),
                                      &sa, &socklen)
        != NGX_OK)
    {
        ngx_http_influencers_redis_log(link, &link->down,
                                       "cannot be found: sentinel %V names "
                                       "an address that is not one",
                                       &io->addr->name);
        ngx_http_influencers_redis_io_close(io, NULL);
        return;
    }

    ngx_http_influencers_redis_set_addr(link, &sa, socklen,
                                        (u_char *) reply->element[0]->str,
                                        reply->element[0]->len);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: sentinel %V names the master %V",
                   &io->addr->name, &link->master.name);

    /* +switch-master from now on: replies no command waits for */

    argv[0] = "SUBSCRIBE";
    argvlen[0] = sizeof("SUBSCRIBE") - 1;
    argv[1] = "+switch-master";
    argvlen[1] = sizeof("+switch-master") - 1;

    if (ngx_http_influencers_redis_io_send(io, 2, argv, argvlen,
                            ngx_http_influencers_redis_sentinel_subscribed,
                            link)
        != NGX_OK)
    {
        ngx_http_influencers_redis_io_close(io, NULL);
    }

    (void) ngx_http_influencers_redis_connect_to(link, &link->master);
}


/* an address literal and a port a server named, not yet any link's */

static ngx_int_t
ngx_http_influencers_redis_parse_addr(u_char *ip, size_t len, ngx_int_t port,
    ngx_sockaddr_t *sa, socklen_t *socklen)
{
    in_addr_t  inaddr;

    if (len == 0 || port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    inaddr = ngx_inet_addr(ip, len);

    if (inaddr != INADDR_NONE) {
        sa->sockaddr_in.sin_family = AF_INET;
        sa->sockaddr_in.sin_addr.s_addr = inaddr;
        sa->sockaddr_in.sin_port = htons((in_port_t) port);
        *socklen = sizeof(struct sockaddr_in);
        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(ip, len, sa->sockaddr_in6.sin6_addr.s6_addr)
        == NGX_OK)
    {
        sa->sockaddr_in6.sin6_family = AF_INET6;
        sa->sockaddr_in6.sin6_port = htons((in_port_t) port);
        *socklen = sizeof(struct sockaddr_in6);
        return NGX_OK;
    }
#endif

    return NGX_ERROR;
}


/* a parsed address becomes the link's own: its text for the log, and the
 * address as named, the name its certificate is checked for */

static void
ngx_http_influencers_redis_set_addr(ngx_http_influencers_redis_link_t *link,
    ngx_sockaddr_t *sa, socklen_t socklen, u_char *ip, size_t len)
{
    link->master_sockaddr = *sa;
    link->master.sockaddr = &link->master_sockaddr.sockaddr;
    link->master.socklen = socklen;

    link->master.name.data = link->master_text;
    link->master.name.len = ngx_sock_ntop(link->master.sockaddr, socklen,
                                          link->master_text,
                                          NGX_SOCKADDR_STRLEN, 1);

    len = ngx_min(len, NGX_SOCKADDR_STRLEN);
    ngx_memcpy(link->master_host, ip, len);

    link->master.host.data = link->master_host;
    link->master.host.len = len;
}


static void
ngx_http_influencers_redis_sentinel_subscribed(
    ngx_http_influencers_redis_io_t *io, redisReply *reply, void *data)
{
    /* ["subscribe", "+switch-master", 1]: the messages come as pushes */
}


/*
 * ["message", "+switch-master", "<name> <old ip> <old port> <new ip>
 * <new port>"]: the link leaves the old master at once and asks again.
 */

static void
ngx_http_influencers_redis_sentinel_push(ngx_http_influencers_redis_io_t *io,
    redisReply *reply, void *data)
{
    ngx_http_influencers_redis_link_t  *link = data;

    u_char      *p, *last;
    redisReply  *msg;
    ngx_str_t   *master;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    msg = reply->element[2];
    master = &link->conf->master;
    p = (u_char *) msg->str;
    last = p + msg->len;

    if ((size_t) (last - p) <= master->len || p[master->len] != ' '
        || ngx_strncmp(p, master->data, master->len) != 0)
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, link->log, 0,
                  "influencers: Redis at %V: sentinel %V says the master "
                  "moved (%*s)", &link->conf->name, &io->addr->name,
                  (size_t) (last - p - master->len - 1),
                  p + master->len + 1);

    if (link->state == NGX_HTTP_INFLUENCERS_LINK_READY
        || link->state == NGX_HTTP_INFLUENCERS_LINK_CONNECTING)
    {
        link->moved = 1;
        ngx_http_influencers_redis_close(link);
    }
}


/*
 * The sentinel's connection went: while asking, the next sentinel is
 * asked; later, the subscription is simply gone, and the next connect
 * asks again.
 */

static void
ngx_http_influencers_redis_sentinel_closed(
    ngx_http_influencers_redis_io_t *io)
{
    ngx_http_influencers_redis_link_t  *link = io->data;

    if (link->state != NGX_HTTP_INFLUENCERS_LINK_ASKING || link->exiting) {
        return;
    }

    if (io->error_len) {
        ngx_http_influencers_redis_log(link, &link->down,
                                       "cannot be found: sentinel %V: %*s",
                                       &io->addr->name, io->error_len,
                                       io->error);
    }

    link->next++;

    /* posted: a handler of this connection's may be on the stack */

    if (!link->ask.posted) {
        ngx_post_event(&link->ask, &ngx_posted_events);
    }
}


static void
ngx_http_influencers_redis_sentinel_next(ngx_event_t *ev)
{
    ngx_http_influencers_redis_link_t  *link = ev->data;

    if (link->state != NGX_HTTP_INFLUENCERS_LINK_ASKING || link->exiting) {
        return;
    }

    (void) ngx_http_influencers_redis_sentinel_ask(link);
}


static void
ngx_http_influencers_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_influencers_redis_link_t  *link = ev->data;

    ngx_http_influencers_redis_log(link, &link->down,
                                   "did not connect and answer within "
                                   "connect_timeout (%Mms)",
                                   link->conf->tls.connect_timeout);

    if (link->state == NGX_HTTP_INFLUENCERS_LINK_ASKING) {
        link->next++;
        ngx_http_influencers_redis_fail(link);
        return;
    }

    ngx_http_influencers_redis_close(link);
}


static void
ngx_http_influencers_redis_retry(ngx_event_t *ev)
{
    ngx_http_influencers_redis_link_t  *link = ev->data;

    if (link->state == NGX_HTTP_INFLUENCERS_LINK_BACKOFF) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                       "influencers redis: backoff over, reconnecting");

        (void) ngx_http_influencers_redis_connect(link);
    }
}


/*
 * The connection goes, at once: every operation sent gets its NULL
 * reply, then closed() fails those waiting and starts the backoff.
 */

static void
ngx_http_influencers_redis_close(ngx_http_influencers_redis_link_t *link)
{
    if (link->io.state == NGX_HTTP_INFLUENCERS_REDIS_IO_IDLE
        || link->closing)
    {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: closing the connection");

    link->closing = 1;
    link->state = NGX_HTTP_INFLUENCERS_LINK_CLOSING;

    ngx_http_influencers_redis_io_close(&link->io, NULL);
}


/* the address a log line names after the configured name, if another */

static ngx_str_t *
ngx_http_influencers_redis_where(ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_addr_t *addr)
{
    static ngx_str_t  none = ngx_null_string;

    return link->conf->sentinels ? &addr->name : &none;
}


/* the connection went, closed by the link or by what io found */

static void
ngx_http_influencers_redis_closed(ngx_http_influencers_redis_io_t *io)
{
    ngx_http_influencers_redis_link_t  *link = io->data;

    if (!link->closing && !link->exiting) {
        ngx_http_influencers_redis_log(link, &link->down,
                                     link->state
                                     == NGX_HTTP_INFLUENCERS_LINK_READY
                                     ? "lost the connection%s%V: %*s"
                                     : "is unreachable%s%V: %*s",
                                     link->conf->sentinels ? " to " : "",
                                     ngx_http_influencers_redis_where(link,
                                                                   io->addr),
                                     io->error_len, io->error);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: connection gone%s",
                   link->exiting ? ", exiting" : "");

    link->closing = 0;

    if (link->exiting) {
        link->state = NGX_HTTP_INFLUENCERS_LINK_IDLE;
        return;
    }

    ngx_http_influencers_redis_fail(link);
}


/*
 * No connection: the operations waiting for one fail, and the backoff
 * starts (a master that moved is asked for again at once).
 */

static void
ngx_http_influencers_redis_fail(ngx_http_influencers_redis_link_t *link)
{
    ngx_queue_t                        *q;
    ngx_http_influencers_redis_slot_t  *slot;

    link->reloading = 0;
    link->handshake = 0;

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    if (link->ask.posted) {
        ngx_delete_posted_event(&link->ask);
    }

    /* the next connect asks the sentinels afresh */

    link->state = NGX_HTTP_INFLUENCERS_LINK_BACKOFF;
    ngx_http_influencers_redis_io_close(&link->sentinel, NULL);

    while (!ngx_queue_empty(&link->waiting)) {
        q = ngx_queue_head(&link->waiting);
        slot = ngx_queue_data(q, ngx_http_influencers_redis_slot_t, queue);

        ngx_http_influencers_redis_complete(slot,
                                    NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE);
    }

    if (link->moved) {
        link->moved = 0;
        link->backoff = NGX_HTTP_INFLUENCERS_BACKOFF_MIN;
    }

    ngx_http_influencers_redis_backoff(link);

    /* a node that fails may have failed over: the map says where to */

    ngx_http_influencers_redis_remap(link->fleet, 250);
}


static void
ngx_http_influencers_redis_backoff(ngx_http_influencers_redis_link_t *link)
{
    ngx_msec_t  delay;

    delay = link->backoff;

    link->backoff = ngx_min(delay * 2, NGX_HTTP_INFLUENCERS_BACKOFF_MAX);

    /*
     * Jitter, half the delay: every worker of every node lost the same
     * server at once, and should not all come back to it at once.
     */

    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay / 2 + 1);
    link->state = NGX_HTTP_INFLUENCERS_LINK_BACKOFF;
    link->retry_at = ngx_current_msec + delay;

    link->timer.handler = ngx_http_influencers_redis_retry;
    ngx_add_timer(&link->timer, delay);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                   "influencers redis: reconnecting in %Mms", delay);
}


/*
 * At ERR, at most once a minute for each kind (unreachable or slow;
 * refused; bad replies) per worker and zone, with how many were not
 * logged since.  Never a key, a digest, a token or a password: only what
 * Redis says of itself, cut before any argument it echoes.
 */

static void ngx_cdecl
ngx_http_influencers_redis_log(ngx_http_influencers_redis_link_t *link,
    ngx_http_influencers_redis_limit_t *limit, const char *fmt, ...)
{
    u_char      *p, *last;
    va_list      args;
    ngx_str_t   *pw;
    u_char       buf[NGX_HTTP_INFLUENCERS_REDIS_TEXT * 2];

    if (limit == &link->down || limit == &link->refused) {
        link->failing = 1;
    }

    if (limit->logged && ngx_time() - limit->logged < 60) {
        limit->missed++;
        return;
    }

    last = buf + sizeof(buf);

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    if (limit->missed) {
        p = ngx_slprintf(p, last, " (%ui more since the last such line)",
                         limit->missed);
    }

    /* whatever a server says, the password it was sent never gets out */

    pw = &link->conf->password;

    if (pw->len) {
        ngx_http_influencers_redis_scrub(buf, p, pw);
    }

    pw = &link->conf->sentinel_password;

    if (pw->len) {
        ngx_http_influencers_redis_scrub(buf, p, pw);
    }

    ngx_log_error(NGX_LOG_ERR, link->log, 0,
                  "influencers: Redis at %V %*s (logged once a minute)",
                  link->name, (size_t) (p - buf), buf);

    limit->logged = ngx_time();
    limit->missed = 0;
}


static u_char *
ngx_http_influencers_redis_text(u_char *dst, size_t size, u_char *src,
    size_t len)
{
    u_char  *p, *last, *end;

    p = dst;
    last = dst + size;
    end = src + len;

    while (src < end && p < last) {

        /* "ERR unknown command 'X', with args beginning with: ..." */

        if ((size_t) (end - src) >= sizeof(", with args") - 1
            && ngx_strncmp(src, ", with args", sizeof(", with args") - 1)
               == 0)
        {
            break;
        }

        *p++ = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
        src++;
    }

    return p;
}


/* every occurrence of a secret in a text, starred out */

static void
ngx_http_influencers_redis_scrub(u_char *p, u_char *last, ngx_str_t *secret)
{
    for ( /* void */ ; (size_t) (last - p) >= secret->len; p++) {
        if (ngx_memcmp(p, secret->data, secret->len) == 0) {
            ngx_memset(p, '*', secret->len);
            p += secret->len - 1;
        }
    }
}


/* an error reply's code, if it is one Redis uses for AUTH, else none */

static const char *
ngx_http_influencers_redis_code(redisReply *reply)
{
    ngx_uint_t          i;
    static const char  *codes[] = {
        "WRONGPASS", "NOAUTH", "NOPERM", "ERR", NULL
    };

    for (i = 0; codes[i]; i++) {
        if (ngx_http_influencers_redis_is(reply, (char *) codes[i])) {
            return codes[i];
        }
    }

    return "an error";
}


/* an error reply that starts with this word */

static ngx_uint_t
ngx_http_influencers_redis_is(redisReply *reply, char *word)
{
    size_t  len;

    len = ngx_strlen(word);

    return reply->len >= len
           && ngx_strncmp(reply->str, word, len) == 0
           && (reply->len == len || reply->str[len] == ' ');
}


/*
 * The data: nothing a partner sent, in clear.
 *
 *   key          <prefix>:<org hash, 16 hex>:<key digest, 64 hex>
 *   in flight    'F' token(16) fingerprint(32)
 *   finished     'D' fingerprint(32) job_id(16) influencer_id(16)
 *                retry_after(4, big-endian) expires_ms(8, big-endian)
 */

static size_t
ngx_http_influencers_redis_key(u_char *dst, ngx_str_t *prefix,
    uint64_t org_hash, u_char *key)
{
    u_char      *p, be[8];
    ngx_uint_t   i;

    for (i = 0; i < 8; i++) {
        be[i] = (u_char) (org_hash >> (56 - 8 * i));
    }

    p = ngx_cpymem(dst, prefix->data, prefix->len);
    *p++ = ':';
    p = ngx_hex_dump(p, be, 8);
    *p++ = ':';
    p = ngx_hex_dump(p, key, NGX_HTTP_INFLUENCERS_SHA256_LEN);

    return p - dst;
}


/* a job, as the claim carries it, for a resend byte for byte */

static u_char *
ngx_http_influencers_redis_value_job(u_char *p,
    ngx_http_influencers_entry_t *entry)
{
    p = ngx_cpymem(p, entry->job_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    p = ngx_cpymem(p, entry->influencer_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    p = ngx_cpymem(p, entry->request_id, NGX_HTTP_INFLUENCERS_ID_BYTES);
    *p++ = entry->gender;
    *p++ = entry->age_range;

    return ngx_http_influencers_redis_be(p, entry->retry_after, 4);
}


static void
ngx_http_influencers_redis_read_job(u_char *p,
    ngx_http_influencers_entry_t *entry)
{
    ngx_memcpy(entry->job_id, p, NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(entry->influencer_id, p + NGX_HTTP_INFLUENCERS_ID_BYTES,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    ngx_memcpy(entry->request_id, p + 2 * NGX_HTTP_INFLUENCERS_ID_BYTES,
               NGX_HTTP_INFLUENCERS_ID_BYTES);
    entry->gender = p[48];
    entry->age_range = p[49];
    entry->retry_after = (uint32_t) ngx_http_influencers_redis_unbe(p + 50, 4);
}


/* Redis keeps the whole fingerprint: the zone's shorter one is its own */

size_t
ngx_http_influencers_redis_accepted(u_char *dst, u_char *fingerprint,
    ngx_http_influencers_entry_t *entry)
{
    u_char  *p;

    p = dst;
    *p++ = 'A';
    *p++ = 0;
    p = ngx_cpymem(p, fingerprint, NGX_HTTP_INFLUENCERS_SHA256_LEN);
    p = ngx_http_influencers_redis_value_job(p, entry);
    p = ngx_http_influencers_redis_be(p, entry->expires, 8);

    return p - dst;
}


/*
 * A value a claim found: this request's ('C' or 'A' of its fingerprint),
 * another's, or a value that is not the module's.  Like a state file's
 * entries, a value is checked before it is believed: one that fails is
 * never replayed, and the key answers as if Redis could not be reached.
 * entry's key and org_hash are the caller's.
 */

static ngx_http_influencers_store_e
ngx_http_influencers_redis_decode(ngx_http_influencers_redis_slot_t *slot,
    u_char *v, size_t len, ngx_http_influencers_entry_t *entry)
{
    u_char                             *p, *fp;
    ngx_http_influencers_store_e     rc;
    ngx_http_influencers_redis_link_t  *link;

    link = slot->link;

    ngx_memzero(entry, sizeof(ngx_http_influencers_entry_t));

    switch (len ? v[0] : 0) {

    case 'C':
    case 'U':
        if (len != NGX_HTTP_INFLUENCERS_CLAIM_LEN) {
            goto invalid;
        }

        fp = v + 2 + NGX_HTTP_INFLUENCERS_TOKEN_LEN + 8;
        p = fp + NGX_HTTP_INFLUENCERS_SHA256_LEN;

        if (ngx_memcmp(fp, slot->fingerprint, NGX_HTTP_INFLUENCERS_SHA256_LEN)
            != 0)
        {
            return NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
        }

        ngx_http_influencers_redis_read_job(p, entry);
        entry->state = NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN;
        rc = NGX_HTTP_INFLUENCERS_STORE_BUSY;
        break;

    case 'A':
        if (len != NGX_HTTP_INFLUENCERS_ACCEPTED_LEN) {
            goto invalid;
        }

        fp = v + 2;
        p = fp + NGX_HTTP_INFLUENCERS_SHA256_LEN;

        if (ngx_memcmp(fp, slot->fingerprint, NGX_HTTP_INFLUENCERS_SHA256_LEN)
            != 0)
        {
            return NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
        }

        ngx_http_influencers_redis_read_job(p, entry);
        entry->expires = ngx_http_influencers_redis_unbe(
                             p + NGX_HTTP_INFLUENCERS_JOB_LEN, 8);
        entry->state = NGX_HTTP_INFLUENCERS_ENTRY_DONE;
        rc = NGX_HTTP_INFLUENCERS_STORE_REPLAY;
        break;

    /* the module's earlier versions: in flight, or accepted */

    case 'F':
        if (len != NGX_HTTP_INFLUENCERS_INFLIGHT_LEN) {
            goto invalid;
        }

        return ngx_memcmp(v + 1 + NGX_HTTP_INFLUENCERS_TOKEN_LEN,
                          slot->fingerprint, NGX_HTTP_INFLUENCERS_SHA256_LEN)
               == 0 ? NGX_HTTP_INFLUENCERS_STORE_BUSY
                    : NGX_HTTP_INFLUENCERS_STORE_MISMATCH;

    case 'D':
        if (len != NGX_HTTP_INFLUENCERS_DONE_LEN) {
            goto invalid;
        }

        if (ngx_memcmp(v + 1, slot->fingerprint,
                       NGX_HTTP_INFLUENCERS_SHA256_LEN)
            != 0)
        {
            return NGX_HTTP_INFLUENCERS_STORE_MISMATCH;
        }

        p = v + 1 + NGX_HTTP_INFLUENCERS_SHA256_LEN;
        ngx_memcpy(entry->job_id, p, NGX_HTTP_INFLUENCERS_ID_BYTES);
        ngx_memcpy(entry->influencer_id, p + NGX_HTTP_INFLUENCERS_ID_BYTES,
                   NGX_HTTP_INFLUENCERS_ID_BYTES);
        entry->retry_after = (uint32_t) ngx_http_influencers_redis_unbe(p + 32,
                                                                        4);
        entry->expires = ngx_http_influencers_redis_unbe(p + 36, 8);
        entry->state = NGX_HTTP_INFLUENCERS_ENTRY_DONE;
        rc = NGX_HTTP_INFLUENCERS_STORE_REPLAY;
        break;

    default:
        goto invalid;
    }

    ngx_memcpy(entry->fingerprint, slot->fingerprint,
               NGX_HTTP_INFLUENCERS_DIGEST_LEN);

    if (ngx_http_influencers_zone_check(link->zone, entry) != NGX_OK) {
        goto invalid;
    }

    return rc;

invalid:

    ngx_http_influencers_zone_count(link->zone,
                                    NGX_HTTP_INFLUENCERS_COUNT_BAD);

    ngx_http_influencers_redis_log(link, &link->values,
                                   "holds a value that is not one the "
                                   "module wrote (%uz bytes, '%c'): the key "
                                   "is answered as if Redis could not be "
                                   "reached", len,
                                   (len && v[0] >= 0x21 && v[0] <= 0x7e)
                                   ? v[0] : '?');

    return NGX_HTTP_INFLUENCERS_STORE_UNAVAILABLE;
}


static u_char *
ngx_http_influencers_redis_be(u_char *p, uint64_t n, ngx_uint_t len)
{
    ngx_uint_t  i;

    for (i = len; i > 0; i--) {
        p[i - 1] = (u_char) (n & 0xff);
        n >>= 8;
    }

    return p + len;
}


static uint64_t
ngx_http_influencers_redis_unbe(u_char *p, ngx_uint_t len)
{
    uint64_t    n;
    ngx_uint_t  i;

    n = 0;

    for (i = 0; i < len; i++) {
        n = (n << 8) | p[i];
    }

    return n;
}
