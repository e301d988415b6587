
/*
 * Copyright (C) The influencers module authors.
 */


#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_state.h"

#include <sys/file.h>

#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


/*
 * Two kinds of file, one record format:
 *
 *   <state>              the snapshot: a header, then every unexpired
 *                        entry; written whole to <state>.tmp, synced and
 *                        renamed, when nginx stops and after a start;
 *   <state>.journal.N    sixteen segments written in turn: every entry a
 *                        worker accepts is appended (one write(2) of one
 *                        record, O_APPEND) before the partner is answered,
 *                        and each worker syncs what it wrote once a second,
 *                        in nginx's "default" thread pool where nginx has
 *                        threads, so that no request waits on the disk.
 *
 * A record carries its own magic and checksum, so a torn or damaged record
 * is skipped, never read wrong, and the reader finds the next one.  The
 * master opens the segments before the workers start (so the workers need
 * no rights on the directory), and the workers share them.  A segment is
 * reused, truncated, only once every entry written to it has expired, so
 * the journal holds about as many records as the zone holds entries.
 */


#define NGX_HTTP_INFLUENCERS_STATE_MAGIC   0x53464e49    /* "INFS" */
#define NGX_HTTP_INFLUENCERS_RECORD_MAGIC  0x4a464e49    /* "INFJ" */
#define NGX_HTTP_INFLUENCERS_READ_BUF      (512 * sizeof(                    \
                                           ngx_http_influencers_state_record_t))


typedef struct {
    uint32_t                      magic;
    uint32_t                      crc32;
    ngx_http_influencers_entry_t  entry;
} ngx_http_influencers_state_record_t;


typedef struct {
    uint32_t                      magic;
    uint32_t                      version;
    uint32_t                      record_size;
    uint32_t                      count;
} ngx_http_influencers_state_header_t;


/* per process: the journal's descriptors, opened by the master */

typedef struct {
    ngx_fd_t                      fd[NGX_HTTP_INFLUENCERS_SEGMENTS];
    ngx_uint_t                    unsynced;     /* a bit per segment */
    time_t                        error_logged;
    ngx_event_t                   sync;
    ngx_log_t                    *log;
    ngx_str_t                     path;         /* the snapshot's */
#if (NGX_THREADS)
    ngx_thread_pool_t            *thread_pool;
    ngx_thread_task_t            *task;
#endif
} ngx_http_influencers_state_t;


#if (NGX_THREADS)

typedef struct {
    ngx_http_influencers_state_t *st;
    ngx_uint_t                    segments;     /* to sync */
    ngx_err_t                     err;
} ngx_http_influencers_sync_task_t;

static ngx_str_t  ngx_http_influencers_thread_pool = ngx_string("default");

#endif


typedef struct {
    ngx_fd_t                      fd;
    u_char                       *buf;
    size_t                        len;
    uint32_t                      count;
    ngx_uint_t                    failed;
} ngx_http_influencers_writer_t;


/* every entry the files hold, before the newest of each key is restored */

typedef struct {
    ngx_http_influencers_entry_t *entries;
    ngx_uint_t                    n;
    ngx_uint_t                    nalloc;
    ngx_uint_t                    no_memory;
    ngx_log_t                    *log;
} ngx_http_influencers_state_loader_t;


typedef struct {
    ngx_uint_t                    restored;
    ngx_uint_t                    over_share;
    ngx_uint_t                    no_room;
    ngx_uint_t                    in_doubt;
} ngx_http_influencers_restored_t;


static ngx_int_t ngx_http_influencers_state_read(
    ngx_http_influencers_zone_t *zone, ngx_fd_t fd, u_char *name,
    ngx_uint_t snapshot, ngx_http_influencers_state_loader_t *ld,
        ngx_log_t *log);
static ngx_int_t ngx_http_influencers_state_lock(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_state_t *st,
    ngx_log_t *log);
static void ngx_http_influencers_state_collect(
    ngx_http_influencers_entry_t *entry, void *data);
static void ngx_http_influencers_state_restore(
    ngx_http_influencers_zone_t *zone, ngx_http_influencers_state_loader_t *ld,
    ngx_http_influencers_restored_t *rs, ngx_log_t *log);
static int ngx_libc_cdecl ngx_http_influencers_state_by_key(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_influencers_state_newest(const void *one,
    const void *two);
static void ngx_http_influencers_state_write(
    ngx_http_influencers_entry_t *entry, void *data);
static ngx_int_t ngx_http_influencers_state_flush(
    ngx_http_influencers_writer_t *w);
static void ngx_http_influencers_state_truncate(
    ngx_http_influencers_state_t *st, ngx_log_t *log);
static void ngx_http_influencers_state_sync_handler(ngx_event_t *ev);
static ngx_err_t ngx_http_influencers_state_sync(
    ngx_http_influencers_state_t *st, ngx_uint_t segments);
#if (NGX_THREADS)
static void ngx_http_influencers_state_sync_thread(void *data, ngx_log_t *log);
static void ngx_http_influencers_state_sync_done(ngx_event_t *ev);
#endif
static ngx_int_t ngx_http_influencers_state_sync_dir(
    u_char *file, ngx_log_t *log);
static ngx_fd_t ngx_http_influencers_state_open_regular(u_char *name, int mode,
    int create, ngx_log_t *log);


/* what the zone calls, as its journal */

const ngx_http_influencers_zone_journal_t
    ngx_http_influencers_state_journal = {
    ngx_http_influencers_state_open,
    ngx_http_influencers_state_load,
    ngx_http_influencers_state_rotate,
    ngx_http_influencers_state_append
};


/* the journal is synced in nginx's "default" thread pool, if it has one */

ngx_int_t
ngx_http_influencers_state_conf(ngx_conf_t *cf)
{
#if (NGX_THREADS)
    if (ngx_thread_pool_add(cf, NULL) == NULL) {
        return NGX_ERROR;
    }
#endif

    return NGX_OK;
}


/*
 * The journal's segments, opened once by the master: a reload keeps the
 * descriptors the workers already share.
 */

ngx_int_t
ngx_http_influencers_state_open(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_zone_t *ozone, ngx_log_t *log)
{
    u_char                        *name;
    ngx_uint_t                     i;
    ngx_http_influencers_state_t  *st;

    if (ozone && ozone->state) {
        st = ozone->state;

        if (st->path.len != zone->state_file.len
            || ngx_strncmp(st->path.data, zone->state_file.data,
                           st->path.len)
               != 0)
        {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "influencers zone \"%V\" keeps its state file "
                          "\"%V\" until nginx is restarted",
                          &zone->name, &st->path);
        }

        ngx_log_debug1(NGX_LOG_DEBUG_CORE, log, 0,
                       "influencers state \"%V\": the journal kept from "
                       "the last cycle", &zone->name);

        zone->state = st;
        return NGX_OK;
    }

    if (ngx_test_config || zone->state_file.len == 0) {
        return NGX_OK;
    }

    /* allocated once, for the master's life: cycles come and go */

    st = ngx_calloc(sizeof(ngx_http_influencers_state_t), log);
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->path.data = ngx_alloc(zone->state_file.len + 1, log);
    name = ngx_alloc(zone->state_file.len + sizeof(".journal.NN"), log);

    if (st->path.data == NULL || name == NULL) {
        return NGX_ERROR;
    }

    st->path.len = zone->state_file.len;
    ngx_memcpy(st->path.data, zone->state_file.data, st->path.len);
    st->path.data[st->path.len] = '\0';

    for (i = 0; i < NGX_HTTP_INFLUENCERS_SEGMENTS; i++) {
        ngx_sprintf(name, "%V.journal.%ui%Z", &zone->state_file, i);

        st->fd[i] = ngx_http_influencers_state_open_regular(name,
                                                            O_RDWR|O_APPEND,
                                                      1, log);

        if (st->fd[i] == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "influencers zone \"%V\": cannot use the journal "
                          "\"%s\" of \"state=\"", &zone->name, name);
            ngx_free(name);
            return NGX_ERROR;
        }
    }

    ngx_free(name);

    if (ngx_http_influencers_state_lock(zone, st, log) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": %d journal segments opened",
                   &zone->name, NGX_HTTP_INFLUENCERS_SEGMENTS);

    zone->state = st;

    return NGX_OK;
}


/*
 * One instance of nginx per state file: two would empty each other's
 * journal.  The lock is flock(2)'s, on the journal's first segment, so
 * that the master's daemon child and the workers, which share its open
 * file, hold it as long as any of them lives.  The new binary of an
 * upgrade (USR2) finds the old master holding it: said, not refused.
 */

static ngx_int_t
ngx_http_influencers_state_lock(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_state_t *st, ngx_log_t *log)
{
    ngx_err_t  err;

    if (flock(st->fd[0], LOCK_EX|LOCK_NB) == 0) {
        return NGX_OK;
    }

    err = ngx_errno;

    if (err != NGX_EAGAIN) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "influencers zone \"%V\": flock() of the journal of "
                      "\"%V\" failed", &zone->name, &st->path);
        return NGX_OK;
    }

    if (ngx_inherited) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\": the state file \"%V\" is "
                      "held by the nginx being upgraded: quit it promptly",
                      &zone->name, &st->path);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, log, 0,
                  "influencers zone \"%V\": the state file \"%V\" is in "
                  "use by another nginx: two instances must not share a "
                  "\"state=\" path", &zone->name, &st->path);

    return NGX_ERROR;
}


/*
 * On start: the snapshot and every segment, into the zone, the newest
 * entry of each key only; then all of it written back as one snapshot and
 * the segments emptied, so that each start begins with an empty journal.
 */

void
ngx_http_influencers_state_load(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_journal_t *journal, ngx_log_t *log)
{
    u_char                           *name;
    ngx_fd_t                          fd;
    uint64_t                          now_ms;
    ngx_uint_t                        i, journaled, left;
    ngx_file_info_t                   fi;
    ngx_http_influencers_state_t     *st;
    ngx_http_influencers_state_loader_t     ld;
    ngx_http_influencers_restored_t   rs;

    st = zone->state;

    if (st == NULL) {
        return;
    }

    ngx_memzero(&ld, sizeof(ngx_http_influencers_state_loader_t));
    ld.log = log;

    fd = ngx_http_influencers_state_open_regular(zone->state_file.data,
                                                 O_RDONLY, 0, log);

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_http_influencers_state_read(zone, fd,
                                               zone->state_file.data, 1,
                                               &ld, log);
        (void) ngx_close_file(fd);
    }

    journaled = 0;

    name = ngx_alloc(zone->state_file.len + sizeof(".journal.NN"), log);
    if (name == NULL) {
        goto done;
    }

    for (i = 0; i < NGX_HTTP_INFLUENCERS_SEGMENTS; i++) {
        if (ngx_fd_info(st->fd[i], &fi) == NGX_FILE_ERROR
            || ngx_file_size(&fi) == 0)
        {
            continue;
        }

        journaled++;

        ngx_sprintf(name, "%V.journal.%ui%Z", &zone->state_file, i);

        if (lseek(st->fd[i], 0, SEEK_SET) == -1) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "lseek(\"%s\") failed", name);
            continue;
        }

        (void) ngx_http_influencers_state_read(zone, st->fd[i], name, 0,
                                               &ld, log);
    }

    ngx_free(name);

    ngx_memzero(&rs, sizeof(ngx_http_influencers_restored_t));

    ngx_http_influencers_state_restore(zone, &ld, &rs, log);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "influencers zone \"%V\": %ui entries loaded from \"%V\" "
                  "and its journal (%ui of them jobs in doubt)",
                  &zone->name, rs.restored, &zone->state_file, rs.in_doubt);

    left = rs.over_share + rs.no_room + ld.no_memory;

    if (left) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\" is too small for its state: "
                      "%ui entries were not loaded, the oldest first (%ui "
                      "over their org's share of %ui%%, %ui past the room "
                      "kept free for new jobs, %ui for want of memory)",
                      &zone->name, left, rs.over_share, zone->org_share,
                      rs.no_room, ld.no_memory);
    }

    now_ms = ngx_http_influencers_zone_wall_ms();

    journal->seq = 0;
    journal->started[0] = now_ms;

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": %ui journal segments not "
                   "empty", &zone->name, journaled);

    if (journaled == 0) {
        goto done;
    }

    if (ngx_http_influencers_state_save(zone, log) == NGX_OK) {
        goto done;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": no snapshot, the journal "
                   "stays until it expires", &zone->name);

    /* the segments stay, and none is reused before its entries expire */

    for (i = 1; i < NGX_HTTP_INFLUENCERS_SEGMENTS; i++) {
        journal->started[i] = now_ms;
    }

done:

    if (ld.entries) {
        ngx_free(ld.entries);
    }
}


/*
 * The files hold a key's history: its claim (in doubt until it ends), its
 * acceptance, its release.  The newest record of each key tells its
 * state; a released key has none.  Then the newest entries first, so that
 * a zone smaller than the files keeps what a partner is likeliest to
 * retry, within each org's share and leaving room for new jobs.
 */

static void
ngx_http_influencers_state_restore(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_state_loader_t *ld,
        ngx_http_influencers_restored_t *rs,
    ngx_log_t *log)
{
    ngx_uint_t                      i, n, limit;
    ngx_http_influencers_entry_t  **sorted, *e;

    if (ld->n == 0) {
        return;
    }

    sorted = ngx_alloc(ld->n * sizeof(ngx_http_influencers_entry_t *), log);
    if (sorted == NULL) {
        ld->no_memory += ld->n;
        return;
    }

    for (i = 0; i < ld->n; i++) {
        sorted[i] = &ld->entries[i];
    }

    ngx_qsort(sorted, ld->n, sizeof(ngx_http_influencers_entry_t *),
              ngx_http_influencers_state_by_key);

    n = 0;

    for (i = 0; i < ld->n; i++) {
        e = sorted[i];

        if (i > 0
            && ngx_memcmp(e->key, sorted[i - 1]->key,
                          NGX_HTTP_INFLUENCERS_DIGEST_LEN)
               == 0)
        {
            continue;
        }

        if (e->state != NGX_HTTP_INFLUENCERS_ENTRY_RELEASED) {
            sorted[n++] = e;
        }
    }

    ngx_qsort(sorted, n, sizeof(ngx_http_influencers_entry_t *),
              ngx_http_influencers_state_newest);

    limit = ngx_http_influencers_zone_room(zone);

    for (i = 0; i < n; i++) {

        switch (ngx_http_influencers_zone_restore(zone, sorted[i], limit)) {

        case NGX_HTTP_INFLUENCERS_RESTORED:
            rs->restored++;

            if (sorted[i]->state == NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN) {
                rs->in_doubt++;
            }

            break;

        case NGX_HTTP_INFLUENCERS_OVER_SHARE:
            rs->over_share++;
            break;

        case NGX_HTTP_INFLUENCERS_NO_ROOM:
            rs->no_room++;
            break;

        default: /* expired, or not to be believed */
            break;
        }
    }

    ngx_free(sorted);
}


/* by key; of one key, the newest first, and an end before its claim */

static int ngx_libc_cdecl
ngx_http_influencers_state_by_key(const void *one, const void *two)
{
    int                            rc;
    ngx_http_influencers_entry_t  *a, *b;

    a = *(ngx_http_influencers_entry_t **) one;
    b = *(ngx_http_influencers_entry_t **) two;

    rc = ngx_memcmp(a->key, b->key, NGX_HTTP_INFLUENCERS_DIGEST_LEN);

    if (rc) {
        return rc;
    }

    if (a->expires != b->expires) {
        return (a->expires > b->expires) ? -1 : 1;
    }

    return (a->state == NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN)
           - (b->state == NGX_HTTP_INFLUENCERS_ENTRY_UNKNOWN);
}


static int ngx_libc_cdecl
ngx_http_influencers_state_newest(const void *one, const void *two)
{
    ngx_http_influencers_entry_t  *a, *b;

    a = *(ngx_http_influencers_entry_t **) one;
    b = *(ngx_http_influencers_entry_t **) two;

    if (a->expires != b->expires) {
        return (a->expires > b->expires) ? -1 : 1;
    }

    /* as the files have them: a snapshot is written newest first */

    return (a < b) ? -1 : (a > b);
}


static ngx_int_t
ngx_http_influencers_state_read(ngx_http_influencers_zone_t *zone,
    ngx_fd_t fd, u_char *name, ngx_uint_t snapshot,
    ngx_http_influencers_state_loader_t *ld, ngx_log_t *log)
{
    u_char     *buf;
    off_t       total, limit;
    size_t      left, used;
    ssize_t     n;
    uint32_t    version;
    ngx_int_t   rc;
    ngx_uint_t  damaged, bad, header;

    buf = ngx_alloc(NGX_HTTP_INFLUENCERS_READ_BUF, log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    left = 0;
    total = 0;
    damaged = 0;
    bad = 0;
    header = snapshot;
    rc = NGX_OK;

    /* a zone holds at most this much of any file: past it, stop reading */
    limit = (off_t) zone->shm_zone->shm.size * 4 + 1024 * 1024;

    for ( ;; ) {
        if (total > limit) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "influencers zone \"%V\": \"%s\" is larger than "
                          "four times the zone, the rest is not read",
                          &zone->name, name);
            break;
        }

        n = ngx_read_fd(fd, buf + left, NGX_HTTP_INFLUENCERS_READ_BUF - left);

        if (n == -1) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          ngx_read_fd_n " \"%s\" failed", name);
            rc = NGX_ERROR;
            break;
        }

        left += n;
        total += n;

        if (header) {
            if (left < sizeof(ngx_http_influencers_state_header_t)
                && n != 0)
            {
                continue;
            }

            header = 0;

            rc = ngx_http_influencers_state_header(buf, left, &version);

            if (rc != NGX_OK) {
                left = 0;
            }

            if (rc == NGX_DECLINED) {
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "influencers: the state file \"%s\" has layout "
                              "version %uD and this module reads version "
                              "%d: its entries are not loaded",
                              name, version,
                              NGX_HTTP_INFLUENCERS_ZONE_VERSION);
                break;
            }

            if (rc != NGX_OK) {
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "influencers: \"%s\" is not a state file, "
                              "ignored", name);
                break;
            }

            left -= sizeof(ngx_http_influencers_state_header_t);
            ngx_memmove(buf, buf + sizeof(ngx_http_influencers_state_header_t),
                        left);
        }

        used = ngx_http_influencers_state_parse(buf, left,
                                       ngx_http_influencers_state_collect,
                                       ld, &damaged, &bad);
        left -= used;
        ngx_memmove(buf, buf + used, left);

        if (n == 0) {
            break;
        }
    }

    /*
     * A record cut short by a crash (it was never answered with), unless
     * it is the end of a damaged stretch, counted already.
     */

    if (left && !bad) {
        damaged++;
    }

    if (damaged) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "influencers zone \"%V\": %ui damaged or torn "
                      "stretches of \"%s\" skipped",
                      &zone->name, damaged, name);
    }

    ngx_log_debug5(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": \"%s\" read, %O bytes, "
                   "%ui bad stretches, %ui records so far",
                   &zone->name, name, total, damaged, ld->n);

    ngx_free(buf);

    return rc;
}


ngx_int_t
ngx_http_influencers_state_header(u_char *buf, size_t len, uint32_t *version)
{
    ngx_http_influencers_state_header_t  hdr;

    if (len < sizeof(ngx_http_influencers_state_header_t)) {
        return NGX_ERROR;
    }

    ngx_memcpy(&hdr, buf, sizeof(ngx_http_influencers_state_header_t));

    if (hdr.magic != NGX_HTTP_INFLUENCERS_STATE_MAGIC) {
        return NGX_ERROR;
    }

    *version = hdr.version;

    if (hdr.version != NGX_HTTP_INFLUENCERS_ZONE_VERSION
        || hdr.record_size != sizeof(ngx_http_influencers_state_record_t))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Every whole record whose magic and checksum agree goes to the handler;
 * past a damaged one the reader moves on a byte at a time until records
 * agree again, and counts the stretch once.  *bad says whether the last
 * call ended inside a damaged stretch, which the next call, with the rest
 * of the file, goes on with: a stretch cut by the reader's buffer is still
 * one.  Returns how much of buf it has used.
 */

size_t
ngx_http_influencers_state_parse(u_char *buf, size_t len,
    ngx_http_influencers_entry_pt handler, void *data, ngx_uint_t *damaged,
    ngx_uint_t *bad)
{
    u_char                         *p, *end;
    ngx_http_influencers_state_record_t   rec;

    p = buf;
    end = buf + len;

    while ((size_t) (end - p) >= sizeof(ngx_http_influencers_state_record_t)) {

        ngx_memcpy(&rec, p, sizeof(ngx_http_influencers_state_record_t));

        if (rec.magic == NGX_HTTP_INFLUENCERS_RECORD_MAGIC
            && rec.crc32 == ngx_crc32_short((u_char *) &rec.entry,
                                       sizeof(ngx_http_influencers_entry_t)))
        {
            handler(&rec.entry, data);
            p += sizeof(ngx_http_influencers_state_record_t);
            *bad = 0;
            continue;
        }

        if (!*bad) {
            (*damaged)++;
            *bad = 1;
        }

        p++;
    }

    return p - buf;
}


static void
ngx_http_influencers_state_collect(ngx_http_influencers_entry_t *entry,
    void *data)
{
    ngx_http_influencers_state_loader_t  *ld = data;

    size_t                          n;
    ngx_http_influencers_entry_t   *entries;

    if (ld->n == ld->nalloc) {
        n = ld->nalloc ? 2 * ld->nalloc : 1024;

        entries = ngx_alloc(n * sizeof(ngx_http_influencers_entry_t), ld->log);
        if (entries == NULL) {
            ld->no_memory++;
            return;
        }

        if (ld->entries) {
            ngx_memcpy(entries, ld->entries,
                       ld->n * sizeof(ngx_http_influencers_entry_t));
            ngx_free(ld->entries);
        }

        ld->entries = entries;
        ld->nalloc = n;
    }

    ld->entries[ld->n++] = *entry;
}


/*
 * The snapshot: written aside, synced, then renamed over the old one; the
 * journal is emptied only once the snapshot is safely in place.
 */

ngx_int_t
ngx_http_influencers_state_save(ngx_http_influencers_zone_t *zone,
    ngx_log_t *log)
{
    u_char                               *tmp;
    ngx_int_t                             rc;
    ngx_http_influencers_writer_t         w;
    ngx_http_influencers_state_header_t   hdr;

    rc = NGX_ERROR;

    tmp = ngx_alloc(zone->state_file.len + sizeof(".tmp"), log);
    w.buf = ngx_alloc(NGX_HTTP_INFLUENCERS_READ_BUF, log);

    if (tmp == NULL || w.buf == NULL) {
        goto done;
    }

    ngx_sprintf(tmp, "%V.tmp%Z", &zone->state_file);

    /* a name left by a crash, or planted: never write through it */

    if (ngx_delete_file(tmp) == NGX_FILE_ERROR && ngx_errno != NGX_ENOENT) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", tmp);
        goto done;
    }

    w.fd = open((char *) tmp, O_WRONLY|O_CREAT|O_EXCL|O_NONBLOCK|O_CLOEXEC,
                0600);

    if (w.fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_open_file_n " \"%s\" failed", tmp);
        goto done;
    }

    ngx_memzero(&hdr, sizeof(ngx_http_influencers_state_header_t));
    hdr.magic = NGX_HTTP_INFLUENCERS_STATE_MAGIC;
    hdr.version = NGX_HTTP_INFLUENCERS_ZONE_VERSION;
    hdr.record_size = sizeof(ngx_http_influencers_state_record_t);

    ngx_memcpy(w.buf, &hdr, sizeof(ngx_http_influencers_state_header_t));
    w.len = sizeof(ngx_http_influencers_state_header_t);
    w.count = 0;
    w.failed = 0;

    (void) ngx_http_influencers_zone_each(zone,
                                          ngx_http_influencers_state_write,
                                          &w);

    hdr.count = w.count;

    if (w.failed
        || ngx_http_influencers_state_flush(&w) != NGX_OK
        || pwrite(w.fd, &hdr, sizeof(ngx_http_influencers_state_header_t), 0)
           != (ssize_t) sizeof(ngx_http_influencers_state_header_t)
        || fsync(w.fd) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "influencers: writing the state file \"%s\" failed",
                      tmp);
        (void) ngx_close_file(w.fd);
        (void) ngx_delete_file(tmp);
        goto done;
    }

    (void) ngx_close_file(w.fd);

    if (ngx_rename_file(tmp, zone->state_file.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_rename_file_n " \"%s\" to \"%V\" failed",
                      tmp, &zone->state_file);
        (void) ngx_delete_file(tmp);
        goto done;
    }

    if (ngx_http_influencers_state_sync_dir(zone->state_file.data,
                                            log) != NGX_OK) {
        goto done;
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "influencers zone \"%V\": %uD entries saved to \"%V\"",
                  &zone->name, w.count, &zone->state_file);

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": snapshot written, renamed "
                   "and synced", &zone->name);

    /* every entry of the journal is in the snapshot now */

    if (zone->state) {
        ngx_log_debug1(NGX_LOG_DEBUG_CORE, log, 0,
                       "influencers state \"%V\": the journal emptied",
                       &zone->name);

        ngx_http_influencers_state_truncate(zone->state, log);
    }

    rc = NGX_OK;

done:

    if (tmp) {
        ngx_free(tmp);
    }

    if (w.buf) {
        ngx_free(w.buf);
    }

    return rc;
}


/* called under the zone's lock, with no worker left to wait for it */

static void
ngx_http_influencers_state_write(ngx_http_influencers_entry_t *entry,
    void *data)
{
    ngx_http_influencers_writer_t  *w = data;

    ngx_http_influencers_state_record_t   rec;

    if (w->failed) {
        return;
    }

    if (w->len + sizeof(ngx_http_influencers_state_record_t)
        > NGX_HTTP_INFLUENCERS_READ_BUF
        && ngx_http_influencers_state_flush(w) != NGX_OK)
    {
        w->failed = 1;
        return;
    }

    rec.magic = NGX_HTTP_INFLUENCERS_RECORD_MAGIC;
    rec.entry = *entry;
    rec.crc32 = ngx_crc32_short((u_char *) &rec.entry,
                                sizeof(ngx_http_influencers_entry_t));

    ngx_memcpy(w->buf + w->len, &rec,
               sizeof(ngx_http_influencers_state_record_t));
    w->len += sizeof(ngx_http_influencers_state_record_t);
    w->count++;
}


static ngx_int_t
ngx_http_influencers_state_flush(ngx_http_influencers_writer_t *w)
{
    if (w->len && ngx_write_fd(w->fd, w->buf, w->len) != (ssize_t) w->len) {
        return NGX_ERROR;
    }

    w->len = 0;

    return NGX_OK;
}


static void
ngx_http_influencers_state_truncate(ngx_http_influencers_state_t *st,
    ngx_log_t *log)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_INFLUENCERS_SEGMENTS; i++) {
        if (ftruncate(st->fd[i], 0) == -1) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "influencers: emptying the journal of \"%V\" "
                          "failed", &st->path);
        }
    }
}


/*
 * Under the zone's lock, on every accepted entry: the segment to write,
 * moving on to the next one when this one is old enough and the next one
 * holds nothing unexpired.
 */

ngx_int_t
ngx_http_influencers_state_rotate(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_journal_t *journal, ngx_log_t *log)
{
    uint64_t                       now_ms, interval, ended;
    ngx_uint_t                     next;
    ngx_http_influencers_state_t  *st;

    st = zone->state;

    if (st == NULL) {
        return NGX_DECLINED;
    }

    now_ms = ngx_http_influencers_zone_wall_ms();
    interval = ngx_max(1000, zone->ttl / (NGX_HTTP_INFLUENCERS_SEGMENTS - 1));

    if (now_ms - journal->started[journal->seq % NGX_HTTP_INFLUENCERS_SEGMENTS]
        < interval)
    {
        return journal->seq;
    }

    /* the next segment was last written until the one after it began */

    next = journal->seq + 1;
    ended = journal->started[(next + 1) % NGX_HTTP_INFLUENCERS_SEGMENTS];

    if (ended + zone->ttl > now_ms) {
        return journal->seq;
    }

    if (ftruncate(st->fd[next % NGX_HTTP_INFLUENCERS_SEGMENTS], 0) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "influencers: emptying a journal segment of \"%V\" "
                      "failed", &st->path);
        return journal->seq;
    }

    journal->seq = next;
    journal->started[next % NGX_HTTP_INFLUENCERS_SEGMENTS] = now_ms;

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, log, 0,
                   "influencers state \"%V\": journal segment %ui "
                   "emptied and begun", &zone->name,
                   next % NGX_HTTP_INFLUENCERS_SEGMENTS);

    return next;
}


/*
 * One record, one write(2): O_APPEND keeps the workers' records whole and
 * apart.  In the page cache it survives the death of any process; the
 * sync timer bounds what a power loss can take.
 */

void
ngx_http_influencers_state_append(ngx_http_influencers_zone_t *zone,
    ngx_uint_t seq, ngx_http_influencers_entry_t *entry, ngx_log_t *log)
{
    ssize_t                         n;
    ngx_uint_t                      i;
    ngx_http_influencers_state_t   *st;
    ngx_http_influencers_state_record_t   rec;

    st = zone->state;
    i = seq % NGX_HTTP_INFLUENCERS_SEGMENTS;

    rec.magic = NGX_HTTP_INFLUENCERS_RECORD_MAGIC;
    rec.entry = *entry;
    rec.crc32 = ngx_crc32_short((u_char *) &rec.entry,
                                sizeof(ngx_http_influencers_entry_t));

    n = ngx_write_fd(st->fd[i], &rec,
                     sizeof(ngx_http_influencers_state_record_t));

    if (n == (ssize_t) sizeof(ngx_http_influencers_state_record_t)) {
        ngx_log_debug2(NGX_LOG_DEBUG_CORE, log, 0,
                       "influencers state \"%V\": entry appended to "
                       "journal segment %ui", &zone->name, i);

        st->unsynced |= (ngx_uint_t) 1 << i;
        return;
    }

    if (st->error_logged != ngx_time() / 60) {
        st->error_logged = ngx_time() / 60;
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "influencers zone \"%V\": writing the journal of "
                      "\"%V\" failed, accepted entries may not survive a "
                      "crash (logged once a minute)",
                      &zone->name, &st->path);
    }
}


ngx_int_t
ngx_http_influencers_state_init_process(ngx_http_influencers_zone_t *zone,
    ngx_cycle_t *cycle)
{
    ngx_http_influencers_state_t      *st;
#if (NGX_THREADS)
    ngx_http_influencers_sync_task_t  *ctx;
#endif

    st = zone->state;

    if (st == NULL) {
        return NGX_OK;
    }

    st->unsynced = 0;
    st->log = cycle->log;

#if (NGX_THREADS)
    st->thread_pool = ngx_thread_pool_get(cycle,
                                          &ngx_http_influencers_thread_pool);

    if (st->thread_pool) {
        st->task = ngx_thread_task_alloc(cycle->pool,
                                     sizeof(ngx_http_influencers_sync_task_t));
        if (st->task == NULL) {
            return NGX_ERROR;
        }

        ctx = st->task->ctx;
        ctx->st = st;

        st->task->handler = ngx_http_influencers_state_sync_thread;
        st->task->event.handler = ngx_http_influencers_state_sync_done;
        st->task->event.data = ctx;
        st->task->event.log = cycle->log;
    }
#endif

    ngx_memzero(&st->sync, sizeof(ngx_event_t));
    st->sync.handler = ngx_http_influencers_state_sync_handler;
    st->sync.data = st;
    st->sync.log = cycle->log;
    st->sync.cancelable = 1;

    ngx_add_timer(&st->sync, 1000);

    return NGX_OK;
}


/* at exit, whatever is left, here and now */

void
ngx_http_influencers_state_exit_process(ngx_http_influencers_zone_t *zone)
{
    ngx_err_t                      err;
    ngx_http_influencers_state_t  *st;

    st = zone->state;

    if (st == NULL || st->unsynced == 0) {
        return;
    }

    err = ngx_http_influencers_state_sync(st, st->unsynced);
    st->unsynced = 0;

    if (err) {
        ngx_log_error(NGX_LOG_ALERT, st->log, err,
                      "fdatasync() of the journal of \"%V\" failed",
                      &st->path);
    }
}


static void
ngx_http_influencers_state_sync_handler(ngx_event_t *ev)
{
    ngx_err_t                          err;
    ngx_http_influencers_state_t      *st = ev->data;
#if (NGX_THREADS)
    ngx_http_influencers_sync_task_t  *ctx;
#endif

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, 1000);
    }

    if (st->unsynced == 0) {
        return;
    }

#if (NGX_THREADS)
    if (st->task) {
        if (st->task->event.active) {
            /* the last sync is still running: its segments wait a second */
            return;
        }

        ctx = st->task->ctx;
        ctx->segments = st->unsynced;
        ctx->err = 0;

        if (ngx_thread_task_post(st->thread_pool, st->task) == NGX_OK) {
            ngx_log_debug2(NGX_LOG_DEBUG_CORE, st->log, 0,
                           "influencers state \"%V\": sync of segments "
                           "%xi posted", &st->path, st->unsynced);

            st->unsynced = 0;
            return;
        }

        /* the pool's queue is full: sync here rather than not at all */
    }
#endif

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, st->log, 0,
                   "influencers state \"%V\": sync of segments %xi here",
                   &st->path, st->unsynced);

    err = ngx_http_influencers_state_sync(st, st->unsynced);
    st->unsynced = 0;

    if (err) {
        ngx_log_error(NGX_LOG_ALERT, st->log, err,
                      "fdatasync() of the journal of \"%V\" failed",
                      &st->path);
    }
}


#if (NGX_THREADS)

static void
ngx_http_influencers_state_sync_thread(void *data, ngx_log_t *log)
{
    ngx_http_influencers_sync_task_t  *ctx = data;

    ctx->err = ngx_http_influencers_state_sync(ctx->st, ctx->segments);
}


static void
ngx_http_influencers_state_sync_done(ngx_event_t *ev)
{
    ngx_http_influencers_sync_task_t  *ctx = ev->data;

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, ctx->st->log, 0,
                   "influencers state \"%V\": sync of segments %xi done",
                   &ctx->st->path, ctx->segments);

    if (ctx->err) {
        ngx_log_error(NGX_LOG_ALERT, ctx->st->log, ctx->err,
                      "fdatasync() of the journal of \"%V\" failed",
                      &ctx->st->path);
    }
}

#endif


/* safe in a thread: it only reads the descriptors, which never change */

static ngx_err_t
ngx_http_influencers_state_sync(ngx_http_influencers_state_t *st,
    ngx_uint_t segments)
{
    ngx_err_t   err;
    ngx_uint_t  i;

    err = 0;

    for (i = 0; segments; i++) {
        if (!(segments & ((ngx_uint_t) 1 << i))) {
            continue;
        }

        segments &= ~((ngx_uint_t) 1 << i);

        if (fdatasync(st->fd[i]) == -1) {
            err = ngx_errno;
        }
    }

    return err;
}


/* the rename itself survives a power loss once the directory is synced */

static ngx_int_t
ngx_http_influencers_state_sync_dir(u_char *file, ngx_log_t *log)
{
    u_char     *slash, c;
    ngx_fd_t    fd;
    ngx_int_t   rc;

    slash = (u_char *) strrchr((char *) file, '/');

    if (slash == NULL) {
        return NGX_OK;
    }

    c = slash[1];
    slash[1] = '\0';

    fd = open((char *) file, O_RDONLY|O_DIRECTORY|O_CLOEXEC);

    rc = NGX_OK;

    if (fd == -1 || fsync(fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "influencers: syncing the directory \"%s\" failed",
                      file);
        rc = NGX_ERROR;
    }

    slash[1] = c;

    if (fd != -1) {
        (void) close(fd);
    }

    return rc;
}


/*
 * Only a regular file, and never a wait: a FIFO or a device at the
 * state file's name would otherwise hang nginx at start.
 */

static ngx_fd_t
ngx_http_influencers_state_open_regular(u_char *name, int mode, int create,
    ngx_log_t *log)
{
    ngx_fd_t         fd;
    ngx_file_info_t  fi;

    fd = open((char *) name, mode|O_NONBLOCK|O_CLOEXEC|O_NOFOLLOW
                             |(create ? O_CREAT : 0),
              0600);

    if (fd == -1) {
        if (ngx_errno != NGX_ENOENT || create) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "influencers: cannot open \"%s\"", name);
        }

        return NGX_INVALID_FILE;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "influencers: \"%s\" is not a regular file, ignored",
                      name);
        (void) ngx_close_file(fd);
        return NGX_INVALID_FILE;
    }

    return fd;
}
