
/*
 * Copyright (C) The influencers module authors.
 *
 * libFuzzer harness: the reader of the state file and of the journal,
 * src/store/ngx_http_influencers_state.c itself (included below, so that its
 * static reader loop is reached too), built against nginx's headers from
 * a configured build directory.  The little it needs of nginx's core is
 * provided here, and nothing else of nginx runs.
 *
 * The input is two bytes of choices, up to fifteen read sizes, then the
 * file:
 *
 *   byte 0   bit 0: a snapshot (a header first), else a journal segment;
 *            bit 1: make each record-aligned record's checksum right;
 *            bit 2: make each record-aligned record's magic right;
 *            bit 3: make the header right;
 *   byte 1   how many read sizes follow (its low four bits): read(2)
 *            answers with at most that many bytes in turn, as a pipe or
 *            an interrupted read might, 0xff for a failed read;
 *
 * Besides what ASan and UBSan catch (leaks included), what the reader
 * collects for the zone is held to a plain reference: the header, then
 * every 112-byte record whose magic and CRC-32 agree, scanning on a byte
 * at a time past anything else, however the reads cut the file; and the
 * damaged stretches it reports are the ones there are.
 *
 * A broken property aborts, which libFuzzer reports as a crash.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_influencers.h"
#include "ngx_http_influencers_zone.h"
#include "ngx_http_influencers_state.h"

#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


static ssize_t ngx_http_influencers_fuzz_read(int fd, void *buf, size_t n);

/* the reader's read(2), from here on */
#define read  ngx_http_influencers_fuzz_read

#include "ngx_http_influencers_state.c"

#undef read


#define FUZZ_FD       1000
#define FUZZ_NOW_MS   1700000000000ULL


#define fuzz_assert(cond, what)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_state: %s (%s:%d)\n", what, __FILE__,        \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)


typedef struct {
    const u_char                 *file;
    size_t                        len;
    size_t                        pos;
    const u_char                 *sizes;
    size_t                        nsizes;
    size_t                        next;

    ngx_http_influencers_entry_t *got;          /* what the reader restored */
    size_t                        ngot;
    ngx_uint_t                    damaged;      /* what it logged */
    ngx_uint_t                    logged_damaged;
} fuzz_state_t;


static fuzz_state_t  fuzz;


/* what the reader needs of nginx's core */

static uint32_t           fuzz_crc32_table_short[16];
uint32_t                 *ngx_crc32_table_short = fuzz_crc32_table_short;
static ngx_time_t         fuzz_time;
volatile ngx_time_t      *ngx_cached_time = &fuzz_time;
volatile ngx_msec_t       ngx_current_msec;
ngx_rbtree_t              ngx_event_timer_rbtree;
ngx_uint_t                ngx_exiting;
sig_atomic_t              ngx_quit;
sig_atomic_t              ngx_terminate;
ngx_uint_t                ngx_test_config;
ngx_uint_t                ngx_inherited;


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size);
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size);
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;

    /* "influencers zone \"%V\": %ui damaged or torn stretches ..." */

    if (strstr(fmt, "damaged or torn") != NULL) {
        va_start(args, fmt);
        (void) va_arg(args, ngx_str_t *);
        fuzz.logged_damaged = va_arg(args, ngx_uint_t);
        va_end(args);
    }
}


uint64_t
ngx_http_influencers_zone_wall_ms(void)
{
    return FUZZ_NOW_MS;
}


/* never reached by the reader: a call is a bug of this harness */

#define fuzz_unreachable(name)                                                \
    fprintf(stderr, "fuzz_state: %s called\n", name);                         \
    abort()

ngx_uint_t
ngx_http_influencers_zone_each(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_pt handler, void *data)
{
    fuzz_unreachable("ngx_http_influencers_zone_each");
}

ngx_uint_t
ngx_http_influencers_zone_restore(ngx_http_influencers_zone_t *zone,
    ngx_http_influencers_entry_t *entry, ngx_uint_t limit)
{
    fuzz_unreachable("ngx_http_influencers_zone_restore");
}

ngx_uint_t
ngx_http_influencers_zone_room(ngx_http_influencers_zone_t *zone)
{
    fuzz_unreachable("ngx_http_influencers_zone_room");
}

u_char *
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    fuzz_unreachable("ngx_sprintf");
}

void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    fuzz_unreachable("ngx_rbtree_insert");
}

void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    fuzz_unreachable("ngx_rbtree_delete");
}

#if (NGX_THREADS)

ngx_thread_pool_t *
ngx_thread_pool_add(ngx_conf_t *cf, ngx_str_t *name)
{
    fuzz_unreachable("ngx_thread_pool_add");
}

ngx_thread_pool_t *
ngx_thread_pool_get(ngx_cycle_t *cycle, ngx_str_t *name)
{
    fuzz_unreachable("ngx_thread_pool_get");
}

ngx_thread_task_t *
ngx_thread_task_alloc(ngx_pool_t *pool, size_t size)
{
    fuzz_unreachable("ngx_thread_task_alloc");
}

ngx_int_t
ngx_thread_task_post(ngx_thread_pool_t *tp, ngx_thread_task_t *task)
{
    fuzz_unreachable("ngx_thread_task_post");
}

#endif


/* read(2) of the fuzzed file, in the fuzzed sizes */

static ssize_t
ngx_http_influencers_fuzz_read(int fd, void *buf, size_t n)
{
    size_t  chunk;
    u_char  size;

    fuzz_assert(fd == FUZZ_FD, "a read of another descriptor");

    chunk = n;

    if (fuzz.nsizes) {
        size = fuzz.sizes[fuzz.next++ % fuzz.nsizes];

        if (size == 0xff) {
            errno = EIO;
            return -1;
        }

        chunk = (size_t) size * 8 + 1;
    }

    chunk = ngx_min(chunk, n);
    chunk = ngx_min(chunk, fuzz.len - fuzz.pos);

    memcpy(buf, fuzz.file + fuzz.pos, chunk);
    fuzz.pos += chunk;

    return chunk;
}


/* CRC-32 bit by bit: the reference for nginx's table-driven one */

static uint32_t
fuzz_crc32(const u_char *p, size_t len)
{
    int       k;
    uint32_t  crc;

    crc = 0xffffffff;

    while (len--) {
        crc ^= *p++;

        for (k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xedb88320 & (0 - (crc & 1)));
        }
    }

    return crc ^ 0xffffffff;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int       k;
    uint32_t  i, c;

    /* the CRC-32 of a nibble: what nginx's core has as a table */

    for (i = 0; i < 16; i++) {
        c = i;

        for (k = 0; k < 4; k++) {
            c = (c >> 1) ^ (0xedb88320 & (0 - (c & 1)));
        }

        fuzz_crc32_table_short[i] = c;
    }

    fuzz_assert(ngx_crc32_short((u_char *) "123456789", 9) == 0xcbf43926
                && fuzz_crc32((u_char *) "123456789", 9) == 0xcbf43926,
                "CRC-32 tables wrong");

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                                i, nsizes, start, nexp;
    u_char                               *file;
    uint32_t                              version;
    ngx_int_t                             rc;
    ngx_uint_t                            snapshot, damaged, bad;
    ngx_log_t                             log;
    ngx_shm_zone_t                        shm_zone;
    ngx_http_influencers_zone_t           zone;
    ngx_http_influencers_state_record_t         rec;
    ngx_http_influencers_state_loader_t         ld;
    ngx_http_influencers_state_header_t   hdr;

    if (size < 2) {
        return 0;
    }

    snapshot = data[0] & 1;
    nsizes = data[1] & 0x0f;

    if (size < 2 + nsizes) {
        return 0;
    }

    ngx_memzero(&fuzz, sizeof(fuzz_state_t));
    fuzz.sizes = data + 2;
    fuzz.nsizes = nsizes;
    fuzz.len = size - 2 - nsizes;

    /* a copy of the file's exact size: ASan sees a byte read past it */

    file = malloc(fuzz.len ? fuzz.len : 1);
    fuzz_assert(file != NULL, "out of memory");
    ngx_memcpy(file, data + 2 + nsizes, fuzz.len);
    fuzz.file = file;

    start = snapshot ? sizeof(ngx_http_influencers_state_header_t) : 0;

    if ((data[0] & 8) && snapshot && fuzz.len >= start) {
        hdr.magic = NGX_HTTP_INFLUENCERS_STATE_MAGIC;
        hdr.version = NGX_HTTP_INFLUENCERS_ZONE_VERSION;
        hdr.record_size = sizeof(ngx_http_influencers_state_record_t);
        ngx_memcpy(&hdr.count, file + 12, sizeof(uint32_t));
        ngx_memcpy(file, &hdr, sizeof(hdr));
    }

    for (i = start; i + sizeof(rec) <= fuzz.len; i += sizeof(rec)) {
        ngx_memcpy(&rec, file + i, sizeof(rec));

        if (data[0] & 4) {
            rec.magic = NGX_HTTP_INFLUENCERS_RECORD_MAGIC;
        }

        if (data[0] & 2) {
            rec.crc32 = fuzz_crc32((u_char *) &rec.entry, sizeof(rec.entry));
        }

        ngx_memcpy(file + i, &rec, sizeof(rec));
    }

    /* the reader, as the zone's start runs it */

    ngx_memzero(&log, sizeof(ngx_log_t));
    log.log_level = NGX_LOG_DEBUG;

    ngx_memzero(&shm_zone, sizeof(ngx_shm_zone_t));
    shm_zone.shm.size = 1024 * 1024;

    ngx_memzero(&zone, sizeof(ngx_http_influencers_zone_t));
    ngx_str_set(&zone.name, "fuzz");
    zone.shm_zone = &shm_zone;

    ngx_memzero(&ld, sizeof(ngx_http_influencers_state_loader_t));
    ld.log = &log;

    rc = ngx_http_influencers_state_read(&zone, FUZZ_FD, (u_char *) "fuzz",
                                         snapshot, &ld, &log);

    fuzz.got = ld.entries;
    fuzz.ngot = ld.n;

    /* the reference */

    nexp = 0;
    damaged = 0;

    if (snapshot) {
        if (fuzz.len >= start) {
            ngx_memcpy(&hdr, file, sizeof(hdr));
        }

        if (fuzz.len < start
            || hdr.magic != NGX_HTTP_INFLUENCERS_STATE_MAGIC
            || hdr.version != NGX_HTTP_INFLUENCERS_ZONE_VERSION
            || hdr.record_size != sizeof(ngx_http_influencers_state_record_t))
        {
            fuzz_assert(rc != NGX_OK && fuzz.ngot == 0,
                        "a file without a good header read");
            goto done;
        }

        /* the direct call agrees */

        fuzz_assert(ngx_http_influencers_state_header(file, fuzz.len,
                                                      &version) == NGX_OK
                    && version == NGX_HTTP_INFLUENCERS_ZONE_VERSION,
                    "a good header refused");
    }

    bad = 0;
    i = start;

    while (fuzz.len - i >= sizeof(rec)) {
        ngx_memcpy(&rec, file + i, sizeof(rec));

        if (rec.magic == NGX_HTTP_INFLUENCERS_RECORD_MAGIC
            && rec.crc32 == fuzz_crc32((u_char *) &rec.entry,
                                       sizeof(rec.entry)))
        {
            fuzz_assert(nexp >= fuzz.ngot
                        || ngx_memcmp(&fuzz.got[nexp], &rec.entry,
                                      sizeof(rec.entry)) == 0,
                        "a good record read wrong");

            nexp++;
            i += sizeof(rec);
            bad = 0;
            continue;
        }

        if (!bad) {
            damaged++;
            bad = 1;
        }

        i++;
    }

    /* a torn record at the end, unless a damaged stretch ran into it */

    if (fuzz.len - i && !bad) {
        damaged++;
    }

    if (rc != NGX_OK) {
        /* a failed read stops the reader: what it read is still right */
        fuzz_assert(memchr(fuzz.sizes, 0xff, fuzz.nsizes) != NULL,
                    "the reader failed without a failed read");
        fuzz_assert(fuzz.ngot <= nexp, "entries from nowhere");
        goto done;
    }

    fuzz_assert(fuzz.ngot == nexp, "good records lost");

    if (fuzz.logged_damaged != damaged) {
        fprintf(stderr, "damaged: reported %lu, there are %lu\n",
                (unsigned long) fuzz.logged_damaged, (unsigned long) damaged);
    }

    fuzz_assert(fuzz.logged_damaged == damaged,
                "damaged stretches miscounted");

done:

    free(ld.entries);
    free(file);

    return 0;
}
