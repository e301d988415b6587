/*
 * pace: an open-loop HTTP/1.1 load generator for latency under a fixed
 * rate, in the manner of wrk2 (coordinated-omission corrected).
 *
 *   cc -O2 -Wall -Wextra -Werror -o pace t/bench/pace.c
 *   pace [options] RATE SECONDS CONNECTIONS HOST:PORT PATH
 *
 * Request i (i = 0, 1, ...) is scheduled at start + i / RATE, for
 * warm-up + SECONDS.  At its scheduled time it goes out on an idle
 * keep-alive connection (the longest idle one); when none is idle it
 * waits, in order, and its latency is still measured from its SCHEDULED
 * time, not from when it was written: a server that stalls cannot hide
 * the requests it delayed (coordinated omission).  Latencies of requests
 * scheduled after the warm-up are kept in a preallocated array (µs),
 * sorted at the end and reported as percentiles, beside the achieved
 * rate, the count of each status and the errors.
 *
 * The run is bounded whatever the server does: up to 1 s to open the
 * connections, then the schedule (warm-up + SECONDS), then at most the
 * timeout (-t) for what is still waiting or in flight.  A request with
 * no complete response within the timeout of its write, or still waiting
 * for a connection or in flight at that deadline, is counted as an error
 * (timeout / unsent) and enters the percentiles at the time it had
 * waited so far, a lower bound.  A request whose connection fails
 * (reset, closed, a malformed response) is counted as an error and not
 * in the percentiles; the connection is opened again (after 100 ms if
 * refused).  SIGINT/SIGTERM stop the run early and print what was
 * measured.
 *
 * Responses are parsed as they come, over as many reads as they take:
 * the status line, the headers (Content-Length, Transfer-Encoding:
 * chunked, Connection: close, HTTP/1.0), the body (by length, chunked
 * with extensions and trailers, or to the close), interim 1xx skipped.
 * Anything else (bytes with no request outstanding, a malformed head,
 * a head over 16 KiB) is a parse error and closes the connection.
 *
 * Options:
 *   -m METHOD     request method (POST)
 *   -H 'N: V'     an extra request header (repeatable)
 *   -b BODY       the request body
 *   -f FILE       extra header lines, an empty line, then the body
 *                 (the body runs to the end of the file, as is)
 *   -k NAME       a header whose value is PREFIX<n>, n the request's index
 *   -K PREFIX     that value's prefix (pace-<pid>-<time>-)
 *   -w SECONDS    warm-up excluded from the statistics (1)
 *   -t SECONDS    request and connect timeout (5)
 *   -S US         wake US µs before each scheduled time and poll
 *                 (busy) until it: less wake-up lag, a busier CPU (0)
 *   -q            print only the summary line
 *
 * Output: human lines, then one line for scripts (rate and sent: the
 * answers received and the requests written a second after the warm-up,
 * whichever request they belong to, over SECONDS or until the last
 * answer):
 *   summary target=R rate=A sent=S p50=.. p90=.. p99=.. p999=.. max=..
 *           ok=N non2xx=N errors=N warmup_non2xx=N lag50=.. lag99=..
 *           svc50=.. svc99=.. unsent=N backlog=N statuses=202:N,...
 * (latencies in µs.  lag: pace's own lateness, from a request's
 * scheduled time to when pace saw it due (a late timer, pace off the
 * CPU); it is inside the latencies, and a wait for an idle connection is
 * not part of it.  svc: written to answered, what a closed-loop tool
 * would report, for comparison.  backlog: the most requests waiting for
 * an idle connection at once.  statuses and ok/non2xx count the measured
 * requests, errors the whole run.)
 * Exit status: 0 when the run completed (whatever the statuses), 1 on a
 * setup failure, 2 on a usage error.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000LL
#define INBUF 16384           /* a response's headers must fit */
#define RECONNECT_NS (100 * 1000000LL)
#define MAX_CONNS 10000

enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

/* response parser states */
enum { P_HEAD, P_BODY_CL, P_BODY_CLOSE, P_CHUNK_SIZE, P_CHUNK_DATA,
       P_CHUNK_CRLF, P_TRAILER };

typedef struct conn {
    int fd;
    int state;
    int64_t since;            /* connect start, or request write time */
    int64_t retry_at;         /* C_DOWN: when to connect again */
    int64_t req;              /* C_BUSY: the request's index */
    char *out;                /* the request being written */
    size_t out_cap, out_len, out_off;
    uint32_t events;          /* what epoll watches for */
    char in[INBUF];
    size_t in_len;
    int pstate;
    int status;
    int close_after;          /* Connection: close, or HTTP/1.0 */
    int64_t remain;           /* body or chunk bytes still to come */
    struct conn *next_idle;
} conn_t;

static struct {
    double rate;
    double secs, warm, timeout, spin_us;
    int nconns;
    const char *host, *port, *path, *method;
    char *hdrs;               /* extra header lines, CRLF-terminated */
    size_t hdrs_len;
    char *body;
    size_t body_len;
    const char *key_name, *key_prefix;
    int quiet;
} opt;

static struct sockaddr_storage addr;
static socklen_t addr_len;
static int ep, tfd;
static conn_t *conns;
static conn_t *idle_head, *idle_tail;
static char *req_head;        /* request line, Host and extra headers */
static size_t req_head_len;
static char req_tail[64];     /* Content-Length and the empty line */
static size_t req_tail_len;
static volatile sig_atomic_t stop_flag;

static int64_t t0, t_measure, t_sched_end, t_deadline, t_last_answer;
static int64_t total, first_measured, nmeasured;
static int64_t next_sched;    /* next request to become due */
static int64_t next_send;     /* oldest due request not yet written */
static uint32_t *lat;         /* by request index - first_measured */
static uint32_t *lag;         /* scheduled to seen due by pace, µs */
static uint32_t *svc;         /* written to answered, µs (uncorrected) */
static unsigned char *done;   /* 1 answered, 2 failed, 3 timed out */
static int64_t nlat, nlag, nsvc;
static int64_t housekeep_at;  /* 0: a connection wants reopening now */

static struct {
    int64_t status[600], other_status;
    int64_t answered, sent_measured;
    int64_t answered_window, sent_window;   /* at a time after the warm-up */
    int64_t err_connect, err_reset, err_parse, err_timeout, err_unsent;
    int64_t closed_idle;
    int64_t warm_non2xx;      /* warm-up answers other than 2xx */
    int64_t max_backlog;
} st;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t sched_time(int64_t i)
{
    return t0 + (int64_t) ((double) i * 1e9 / opt.rate);
}

static void on_signal(int sig)
{
    (void) sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: pace [-m METHOD] [-H 'Name: value']... [-b BODY | -f FILE]\n"
        "            [-k HEADER [-K PREFIX]] [-w WARMUP] [-t TIMEOUT] [-S US]\n"
        "            [-q]\n"
        "            RATE SECONDS CONNECTIONS HOST:PORT PATH\n");
    exit(2);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL)
        die("calloc");
    return p;
}

static void append(char **buf, size_t *len, const char *s, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    if (*buf == NULL)
        die("realloc");
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void add_header(const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    if (n == 0)
        return;
    if (memchr(line, ':', n) == NULL) {
        fprintf(stderr, "pace: not a header: %.*s\n", (int) n, line);
        exit(2);
    }
    append(&opt.hdrs, &opt.hdrs_len, line, n);
    append(&opt.hdrs, &opt.hdrs_len, "\r\n", 2);
}

static void read_request_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL, *p, *end, *eol;
    size_t len = 0, n;
    char chunk[4096];

    if (f == NULL)
        die(path);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        append(&data, &len, chunk, n);
    if (ferror(f))
        die(path);
    fclose(f);
    if (data == NULL)
        return;
    p = data;
    end = data + len;
    while (p < end) {
        eol = memchr(p, '\n', end - p);
        if (eol == NULL)
            eol = end;
        n = eol - p;
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n == 0) {                   /* the empty line: the body follows */
            p = eol < end ? eol + 1 : end;
            free(opt.body);
            opt.body = NULL;
            opt.body_len = 0;
            append(&opt.body, &opt.body_len, p, end - p);
            break;
        }
        add_header(p, n);
        p = eol < end ? eol + 1 : end;
    }
    free(data);
}

static double parse_num(const char *s, const char *what, double min)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= min) || v > 1e9) {
        fprintf(stderr, "pace: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    int c;
    static char prefix[64];
    char *hp, *colon;
    struct addrinfo hints, *res;
    int rc;

    opt.method = "POST";
    opt.warm = 1;
    opt.timeout = 5;
    while ((c = getopt(argc, argv, "m:H:b:f:k:K:w:t:S:q")) != -1) {
        switch (c) {
        case 'm': opt.method = optarg; break;
        case 'H': add_header(optarg, strlen(optarg)); break;
        case 'b':
            free(opt.body);
            opt.body = NULL;
            opt.body_len = 0;
            append(&opt.body, &opt.body_len, optarg, strlen(optarg));
            break;
        case 'f': read_request_file(optarg); break;
        case 'k': opt.key_name = optarg; break;
        case 'K': opt.key_prefix = optarg; break;
        case 'w': opt.warm = parse_num(optarg, "warm-up", 0); break;
        case 't': opt.timeout = parse_num(optarg, "timeout", 0.001); break;
        case 'S': opt.spin_us = parse_num(optarg, "spin", 0); break;
        case 'q': opt.quiet = 1; break;
        default: usage();
        }
    }
    if (argc - optind != 5)
        usage();
    opt.rate = parse_num(argv[optind], "rate", 0.001);
    opt.secs = parse_num(argv[optind + 1], "seconds", 0.001);
    opt.nconns = (int) parse_num(argv[optind + 2], "connections", 1);
    if (opt.nconns > MAX_CONNS) {
        fprintf(stderr, "pace: at most %d connections\n", MAX_CONNS);
        exit(2);
    }
    hp = strdup(argv[optind + 3]);
    if (hp == NULL)
        die("strdup");
    colon = strrchr(hp, ':');
    if (colon == NULL || colon == hp || colon[1] == '\0') {
        fprintf(stderr, "pace: HOST:PORT expected: %s\n", argv[optind + 3]);
        exit(2);
    }
    *colon = '\0';
    opt.host = hp;
    opt.port = colon + 1;
    opt.path = argv[optind + 4];
    if (opt.path[0] != '/') {
        fprintf(stderr, "pace: the path must start with /\n");
        exit(2);
    }
    if (opt.key_name != NULL && opt.key_prefix == NULL) {
        snprintf(prefix, sizeof(prefix), "pace-%ld-%ld-",
                 (long) getpid(), (long) time(NULL));
        opt.key_prefix = prefix;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "pace: %s:%s: %s\n", opt.host, opt.port,
                gai_strerror(rc));
        exit(1);
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
}

static void build_request_parts(void)
{
    char line[1024];
    int n;
    int need_cl;

    n = snprintf(line, sizeof(line), "%s %s HTTP/1.1\r\nHost: %s:%s\r\n",
                 opt.method, opt.path, opt.host, opt.port);
    if (n < 0 || (size_t) n >= sizeof(line)) {
        fprintf(stderr, "pace: request line too long\n");
        exit(2);
    }
    append(&req_head, &req_head_len, line, n);
    if (opt.hdrs_len)
        append(&req_head, &req_head_len, opt.hdrs, opt.hdrs_len);
    need_cl = opt.body_len > 0 || strcmp(opt.method, "POST") == 0
              || strcmp(opt.method, "PUT") == 0
              || strcmp(opt.method, "PATCH") == 0;
    if (need_cl)
        req_tail_len = snprintf(req_tail, sizeof(req_tail),
                                "Content-Length: %zu\r\n\r\n", opt.body_len);
    else
        req_tail_len = snprintf(req_tail, sizeof(req_tail), "\r\n");
}

/* ---- connections ---- */

static void idle_push(conn_t *c)
{
    c->state = C_IDLE;
    c->next_idle = NULL;
    if (idle_tail)
        idle_tail->next_idle = c;
    else
        idle_head = c;
    idle_tail = c;
}

static conn_t *idle_pop(void)
{
    conn_t *c = idle_head;
    if (c) {
        idle_head = c->next_idle;
        if (idle_head == NULL)
            idle_tail = NULL;
        c->next_idle = NULL;
    }
    return c;
}

static void idle_remove(conn_t *c)
{
    conn_t **pp = &idle_head, *prev = NULL;
    while (*pp && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next_idle;
    }
    if (*pp == NULL)
        return;
    *pp = c->next_idle;
    if (idle_tail == c)
        idle_tail = prev;
    c->next_idle = NULL;
}

static void ep_mod(conn_t *c, uint32_t events)
{
    struct epoll_event ev;
    if (c->events == events)
        return;
    c->events = events;
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void conn_open(conn_t *c, int64_t now)
{
    struct epoll_event ev;
    int one = 1;

    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   0);
    if (c->fd < 0)
        die("socket");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->in_len = 0;
    c->since = now;
    ev.events = c->events = EPOLLOUT;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    if (connect(c->fd, (struct sockaddr *) &addr, addr_len) == 0) {
        ep_mod(c, EPOLLIN);
        idle_push(c);
        return;
    }
    if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        return;
    }
    st.err_connect++;
    close(c->fd);
    c->fd = -1;
    c->state = C_DOWN;
    c->retry_at = now + RECONNECT_NS;
}

/* Closes a connection; its request, if any, fails with how (2 or 3). */
static void conn_close(conn_t *c, int64_t now, int how)
{
    if (c->state == C_IDLE)
        idle_remove(c);
    if (c->state == C_BUSY && c->req >= first_measured) {
        int64_t k = c->req - first_measured;
        if (how == 3 && done[k] == 0) {
            lat[k] = (uint32_t) ((now - sched_time(c->req)) / 1000);
            nlat++;
        }
        done[k] = (unsigned char) how;
    }
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_DOWN;
    c->retry_at = now;        /* reconnect at once; a refusal backs off */
    housekeep_at = 0;
    c->out_len = c->out_off = 0;
}

static void conn_write(conn_t *c, int64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ep_mod(c, EPOLLIN | EPOLLOUT);
            return;
        }
        st.err_reset++;
        conn_close(c, now, 2);
        return;
    }
    ep_mod(c, EPOLLIN);
}

static void send_request(conn_t *c, int64_t i, int64_t now)
{
    size_t cap = req_head_len + req_tail_len + opt.body_len + 128
                 + (opt.key_name ? strlen(opt.key_name) : 0);
    char *p;

    if (c->out_cap < cap) {
        free(c->out);
        c->out = xmalloc(cap);
        c->out_cap = cap;
    }
    p = c->out;
    memcpy(p, req_head, req_head_len);
    p += req_head_len;
    if (opt.key_name)
        p += sprintf(p, "%s: %.64s%" PRId64 "\r\n", opt.key_name,
                     opt.key_prefix, i);
    memcpy(p, req_tail, req_tail_len);
    p += req_tail_len;
    if (opt.body_len) {
        memcpy(p, opt.body, opt.body_len);
        p += opt.body_len;
    }
    c->out_len = p - c->out;
    c->out_off = 0;
    c->state = C_BUSY;
    c->req = i;
    c->since = now;
    c->pstate = P_HEAD;
    c->status = 0;
    c->close_after = 0;
    if (now >= t_measure)
        st.sent_window++;
    if (i >= first_measured)
        st.sent_measured++;
    conn_write(c, now);
}

/* ---- response parsing ---- */

static int header_is(const char *line, size_t n, const char *name,
                     const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
        return 0;
    line += k + 1;
    n -= k + 1;
    while (n && (*line == ' ' || *line == '\t'))
        line++, n--;
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    *val = line;
    *vlen = n;
    return 1;
}

static int has_token(const char *v, size_t n, const char *tok)
{
    size_t k = strlen(tok), i;
    for (i = 0; i + k <= n; i++)
        if (strncasecmp(v + i, tok, k) == 0
            && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ')
            && (i + k == n || v[i + k] == ',' || v[i + k] == ' '
                || v[i + k] == ';'))
            return 1;
    return 0;
}

/*
 * Parses the head in c->in[0 .. end) (end just past the empty line).
 * Returns 0, or -1 for a malformed head.
 */
static int parse_head(conn_t *c, size_t end)
{
    const char *p = c->in, *eol, *v;
    const char *lim = c->in + end;
    size_t n, vlen;
    int chunked = 0, have_cl = 0, minor;
    int64_t cl = 0;

    eol = memchr(p, '\n', lim - p);
    n = eol - p;
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' '
        || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9'
        || p[11] < '0' || p[11] > '9' || (n > 12 && p[12] != ' '
                                          && p[12] != '\r'))
        return -1;
    minor = p[7] - '0';
    c->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    c->close_after = minor == 0;
    for (p = eol + 1; p < lim; p = eol + 1) {
        eol = memchr(p, '\n', lim - p);
        n = eol - p;
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        if (header_is(p, n, "Content-Length", &v, &vlen)) {
            char tmp[24], *e;
            if (vlen == 0 || vlen >= sizeof(tmp) || have_cl)
                return -1;
            memcpy(tmp, v, vlen);
            tmp[vlen] = '\0';
            errno = 0;
            cl = strtoll(tmp, &e, 10);
            if (*e != '\0' || cl < 0 || errno)
                return -1;
            have_cl = 1;
        } else if (header_is(p, n, "Transfer-Encoding", &v, &vlen)) {
            if (!has_token(v, vlen, "chunked"))
                return -1;            /* no other coding is expected */
            chunked = 1;
        } else if (header_is(p, n, "Connection", &v, &vlen)) {
            if (has_token(v, vlen, "close"))
                c->close_after = 1;
            else if (has_token(v, vlen, "keep-alive"))
                c->close_after = 0;
        }
    }
    if ((c->status >= 100 && c->status < 200) || c->status == 204
        || c->status == 304 || strcmp(opt.method, "HEAD") == 0) {
        c->remain = 0;
        c->pstate = P_BODY_CL;
    } else if (chunked) {
        c->pstate = P_CHUNK_SIZE;
    } else if (have_cl) {
        c->remain = cl;
        c->pstate = P_BODY_CL;
    } else {
        c->pstate = P_BODY_CLOSE;
        c->close_after = 1;
    }
    return 0;
}

static void consume(conn_t *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static void record_answer(conn_t *c, int64_t now)
{
    int64_t i = c->req;

    if (now >= t_measure) {       /* throughput: any answer in the window */
        st.answered_window++;
        t_last_answer = now;
    }
    if (i >= first_measured) {
        int64_t k = i - first_measured;
        if (done[k] == 0) {
            int64_t us = (now - sched_time(i)) / 1000;
            lat[k] = (uint32_t) (us > 0 ? (us < UINT32_MAX ? us : UINT32_MAX)
                                        : 0);
            nlat++;
            done[k] = 1;
            st.answered++;
            us = (now - c->since) / 1000;
            svc[nsvc++] = (uint32_t) (us > 0 ? (us < UINT32_MAX ? us
                                                : UINT32_MAX) : 0);
            if (c->status >= 100 && c->status < 600)
                st.status[c->status]++;
            else
                st.other_status++;
        }
    } else if (c->status < 200 || c->status > 299) {
        st.warm_non2xx++;
    }
}

/*
 * Advances the parser over c->in.  Returns 1 when a response is complete
 * (the connection is then idle or closed), 0 for more data, -1 on a
 * protocol error.
 */
static int parse(conn_t *c, int eof)
{
    for (;;) {
        switch (c->pstate) {
        case P_HEAD: {
            char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            size_t end;
            if (e == NULL) {
                char *e2 = memmem(c->in, c->in_len, "\n\n", 2);
                if (e2 == NULL)
                    return c->in_len >= INBUF ? -1 : 0;
                end = e2 - c->in + 2;
            } else {
                end = e - c->in + 4;
            }
            if (parse_head(c, end) < 0)
                return -1;
            consume(c, end);
            if (c->status >= 100 && c->status < 200) {
                c->pstate = P_HEAD;   /* an interim response: skip it */
                continue;
            }
            continue;
        }
        case P_BODY_CL: {
            size_t n = c->in_len < (uint64_t) c->remain ? c->in_len
                                                       : (size_t) c->remain;
            consume(c, n);
            c->remain -= n;
            if (c->remain > 0)
                return eof ? -1 : 0;
            return 1;
        }
        case P_BODY_CLOSE:
            c->in_len = 0;
            return eof ? 1 : 0;
        case P_CHUNK_SIZE: {
            char *eol = memchr(c->in, '\n', c->in_len);
            char *e;
            size_t n;
            if (eol == NULL)
                return c->in_len >= 1024 ? -1 : (eof ? -1 : 0);
            n = eol - c->in + 1;
            errno = 0;
            c->remain = strtoll(c->in, &e, 16);
            if (e == c->in || errno || c->remain < 0
                || (*e != '\r' && *e != '\n' && *e != ';' && *e != ' '))
                return -1;
            consume(c, n);
            c->pstate = c->remain ? P_CHUNK_DATA : P_TRAILER;
            continue;
        }
        case P_CHUNK_DATA: {
            size_t n = c->in_len < (uint64_t) c->remain ? c->in_len
                                                       : (size_t) c->remain;
            consume(c, n);
            c->remain -= n;
            if (c->remain > 0)
                return eof ? -1 : 0;
            c->pstate = P_CHUNK_CRLF;
            continue;
        }
        case P_CHUNK_CRLF: {
            char *eol = memchr(c->in, '\n', c->in_len);
            if (eol == NULL)
                return c->in_len > 1 ? -1 : (eof ? -1 : 0);
            if (eol - c->in > 1 || (eol - c->in == 1 && c->in[0] != '\r'))
                return -1;
            consume(c, eol - c->in + 1);
            c->pstate = P_CHUNK_SIZE;
            continue;
        }
        case P_TRAILER: {
            char *eol = memchr(c->in, '\n', c->in_len);
            size_t n;
            int empty;
            if (eol == NULL)
                return c->in_len >= INBUF ? -1 : (eof ? -1 : 0);
            n = eol - c->in + 1;
            empty = n == 1 || (n == 2 && c->in[0] == '\r');
            consume(c, n);
            if (empty)                /* the empty line that ends them */
                return 1;
            continue;
        }
        }
        return -1;
    }
}

static void conn_readable(conn_t *c, int64_t now)
{
    for (;;) {
        ssize_t n;
        int eof = 0, r;

        if (c->in_len >= INBUF) {
            st.err_parse++;
            conn_close(c, now, 2);
            return;
        }
        n = recv(c->fd, c->in + c->in_len, INBUF - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0)
            eof = 1;
        else
            c->in_len += n;

        if (c->state != C_BUSY) {
            if (eof) {                /* the server closed an idle one */
                st.closed_idle++;
                conn_close(c, now, 2);
                c->retry_at = now;
            } else {                  /* bytes nobody asked for */
                st.err_parse++;
                conn_close(c, now, 2);
            }
            return;
        }
        r = parse(c, eof);
        if (r == 0 && !eof)
            continue;
        if (r == 1) {
            int64_t t = now_ns();     /* the answer is complete: now */
            record_answer(c, t);
            if (c->in_len > 0 || c->close_after || eof) {
                if (c->in_len > 0)
                    st.err_parse++;   /* no pipelining: extra bytes */
                c->state = C_DOWN;    /* nothing in flight any more */
                conn_close(c, t, 2);
                return;
            }
            if (c->out_off < c->out_len) {
                /* answered before the request was all written */
                c->state = C_DOWN;
                conn_close(c, t, 2);
                return;
            }
            idle_push(c);
            return;
        }
        if (eof && r == 0)
            st.err_reset++;
        else
            st.err_parse++;
        conn_close(c, now, 2);
        return;
    }
}

static void conn_event(conn_t *c, uint32_t events, int64_t now)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && (events & EPOLLOUT)) {
            ep_mod(c, EPOLLIN);
            idle_push(c);
            return;
        }
        if (err == 0 && !(events & (EPOLLERR | EPOLLHUP)))
            return;
        st.err_connect++;
        conn_close(c, now, 2);
        c->retry_at = now + RECONNECT_NS;
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        conn_readable(c, now);
        if (c->state != C_BUSY)
            return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY)
        conn_write(c, now);
}

/* ---- the schedule ---- */

static void arm_timer(int64_t when)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (when <= 0)
        when = 1;
    its.it_value.tv_sec = when / NS;
    its.it_value.tv_nsec = when % NS;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime");
}

static void housekeeping(int64_t now)
{
    int64_t tmo = (int64_t) (opt.timeout * 1e9);
    int i;

    for (i = 0; i < opt.nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == C_BUSY && now - c->since > tmo) {
            st.err_timeout++;
            conn_close(c, now, 3);
        } else if (c->state == C_CONNECTING && now - c->since > tmo) {
            st.err_connect++;
            conn_close(c, now, 2);
            c->retry_at = now + RECONNECT_NS;
        }
        if (c->state == C_DOWN && now >= c->retry_at && now < t_deadline)
            conn_open(c, now);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return (x > y) - (x < y);
}

static uint32_t pct(const uint32_t *v, int64_t n, double p)
{
    int64_t k;
    if (n == 0)
        return 0;
    k = (int64_t) (p / 100.0 * (double) n + 0.999999) - 1;   /* nearest rank */
    if (k < 0)
        k = 0;
    if (k >= n)
        k = n - 1;
    return v[k];
}

int main(int argc, char **argv)
{
    struct epoll_event evs[256];
    int64_t now, i, k, spin, armed = -1, n2xx = 0, non2xx = 0, errors;
    int s;
    struct sigaction sa;
    uint32_t *sorted;

    parse_args(argc, argv);
    build_request_parts();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);   /* wake on time, not +50 µs */

    total = (int64_t) ((opt.warm + opt.secs) * opt.rate + 0.5);
    first_measured = (int64_t) (opt.warm * opt.rate + 0.5);
    nmeasured = total - first_measured;
    if (nmeasured <= 0 || total > 2000000000LL) {
        fprintf(stderr, "pace: %" PRId64 " requests: out of range\n", total);
        return 2;
    }
    lat = xmalloc(nmeasured * sizeof(*lat));
    lag = xmalloc(nmeasured * sizeof(*lag));
    svc = xmalloc(nmeasured * sizeof(*svc));
    done = xmalloc(nmeasured);
    conns = xmalloc(opt.nconns * sizeof(*conns));

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create");
    {
        struct epoll_event ev;
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0)
            die("epoll_ctl");
    }

    /* connect first, then start the clock (up to 1 s for the connections) */
    now = now_ns();
    t_sched_end = t_deadline = now + NS;
    for (s = 0; s < opt.nconns; s++) {
        conns[s].fd = -1;
        conn_open(&conns[s], now);
    }
    for (;;) {
        int idle = 0, nev;
        for (s = 0; s < opt.nconns; s++)
            idle += conns[s].state == C_IDLE;
        now = now_ns();
        if (idle == opt.nconns || now >= t_sched_end || stop_flag)
            break;
        nev = epoll_wait(ep, evs, 256, 10);
        now = now_ns();
        for (s = 0; s < nev; s++)
            if (evs[s].data.ptr)
                conn_event(evs[s].data.ptr, evs[s].events, now);
        housekeeping(now);
    }

    spin = (int64_t) (opt.spin_us * 1000);
    t0 = now_ns();
    t_measure = t0 + (int64_t) (opt.warm * 1e9);
    t_sched_end = sched_time(total);
    t_deadline = t_sched_end + (int64_t) (opt.timeout * 1e9);
    housekeeping(t0);

    for (;;) {
        int nev;
        int64_t wake;

        now = now_ns();
        if (stop_flag)
            break;
        /* requests whose time has come join the backlog, in order */
        while (next_sched < total && sched_time(next_sched) <= now) {
            if (next_sched >= first_measured) {
                int64_t d = (now - sched_time(next_sched)) / 1000;
                lag[nlag++] = (uint32_t) (d < UINT32_MAX ? d : UINT32_MAX);
            }
            next_sched++;
        }
        if (next_sched - next_send > st.max_backlog)
            st.max_backlog = next_sched - next_send;
        /* each goes out on the connection idle the longest, until the
           deadline: what still waits then is not sent at all */
        while (next_send < next_sched && now < t_deadline) {
            conn_t *c = idle_pop();
            if (c == NULL)
                break;
            send_request(c, next_send++, now);
        }
        if (now >= housekeep_at) {
            housekeeping(now);
            housekeep_at = now + 5000000;       /* every 5 ms */
        }
        /* the schedule is over: what waits or is in flight gets until
           the deadline, a timeout after the schedule's end */
        if (now >= t_deadline)
            break;
        if (next_send >= total) {
            int busy = 0;
            for (s = 0; s < opt.nconns; s++)
                busy += conns[s].state == C_BUSY;
            if (busy == 0)
                break;
        }

        wake = housekeep_at;
        if (next_sched < total && sched_time(next_sched) - spin < wake)
            wake = sched_time(next_sched) - spin;
        if (wake > t_deadline)
            wake = t_deadline;
        if (spin && wake <= now) {
            nev = epoll_wait(ep, evs, 256, 0);  /* -S: poll until due */
        } else {
            if (wake != armed) {
                arm_timer(wake);
                armed = wake;
            }
            nev = epoll_wait(ep, evs, 256, 1000);
        }
        if (nev < 0 && errno != EINTR)
            die("epoll_wait");
        now = now_ns();
        for (s = 0; s < nev; s++) {
            if (evs[s].data.ptr == NULL) {
                uint64_t x;
                if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
                    die("read timerfd");
                armed = -1;
                continue;
            }
            conn_event(evs[s].data.ptr, evs[s].events, now);
        }
    }

    /* what is left: in flight past the deadline, or never written */
    now = now_ns();
    for (s = 0; s < opt.nconns; s++)
        if (conns[s].state == C_BUSY) {
            st.err_timeout++;
            conn_close(&conns[s], now, 3);
        }
    if (!stop_flag)
        for (i = next_send; i < total; i++)
            if (i >= first_measured && sched_time(i) <= now) {
                k = i - first_measured;
                if (done[k] == 0) {
                    int64_t us = (now - sched_time(i)) / 1000;
                    lat[k] = (uint32_t) (us > 0 ? us : 0);
                    nlat++;
                    done[k] = 3;
                    st.err_unsent++;
                }
            }
    for (s = 0; s < opt.nconns; s++)
        if (conns[s].fd >= 0)
            close(conns[s].fd);

    /* gather the latencies of the requests that have one */
    sorted = xmalloc((nlat ? nlat : 1) * sizeof(*sorted));
    for (i = 0, k = 0; i < nmeasured; i++)
        if (done[i] == 1 || done[i] == 3)
            sorted[k++] = lat[i];
    nlat = k;
    qsort(sorted, nlat, sizeof(*sorted), cmp_u32);
    qsort(lag, nlag, sizeof(*lag), cmp_u32);
    qsort(svc, nsvc, sizeof(*svc), cmp_u32);

    for (s = 200; s < 300; s++)
        n2xx += st.status[s];
    non2xx = st.answered - n2xx;
    errors = st.err_connect + st.err_reset + st.err_parse + st.err_timeout
             + st.err_unsent;
    {
        /* over the measured part of the schedule, or longer if the last
           answer came later (or shorter if stopped by a signal) */
        double span = opt.secs, rate, sent;
        if (stop_flag && now > t_measure)
            span = (double) (now - t_measure) / 1e9;
        sent = st.sent_window / span;
        if (t_last_answer - t_measure > (int64_t) (span * 1e9))
            span = (double) (t_last_answer - t_measure) / 1e9;
        rate = st.answered_window / span;
        if (!opt.quiet) {
            printf("pace: %.0f req/s for %.1f s (+%.1f s warm-up), %d "
                   "connections, %s %s:%s%s%s\n", opt.rate, opt.secs,
                   opt.warm, opt.nconns, opt.method, opt.host, opt.port,
                   opt.path, stop_flag ? " (interrupted)" : "");
            printf("  after the warm-up: scheduled %" PRId64 ", written %"
                   PRId64 ", answered %" PRId64 "; answers a second (any "
                   "request's) %.1f, writes %.1f; max backlog %" PRId64 "\n",
                   nmeasured, st.sent_measured, st.answered, rate, sent,
                   st.max_backlog);
            printf("  latency from the scheduled time (µs): p50 %u  p90 %u"
                   "  p99 %u  p99.9 %u  max %u  (%" PRId64 " values)\n",
                   pct(sorted, nlat, 50), pct(sorted, nlat, 90),
                   pct(sorted, nlat, 99), pct(sorted, nlat, 99.9),
                   nlat ? sorted[nlat - 1] : 0, nlat);
            printf("  pace's own lateness, scheduled to seen due (µs): p50 %u"
                   "  p99 %u  max %u\n", pct(lag, nlag, 50),
                   pct(lag, nlag, 99),
                   nlag ? lag[nlag - 1] : 0);
            printf("  written to answered, NOT corrected (µs): p50 %u  p99 %u"
                   "  p99.9 %u  max %u\n", pct(svc, nsvc, 50),
                   pct(svc, nsvc, 99), pct(svc, nsvc, 99.9),
                   nsvc ? svc[nsvc - 1] : 0);
            printf("  statuses:");
            for (s = 100; s < 600; s++)
                if (st.status[s])
                    printf(" %d: %" PRId64, s, st.status[s]);
            if (st.other_status)
                printf(" other: %" PRId64, st.other_status);
            if (st.answered == 0)
                printf(" none");
            printf("; in the warm-up, not 2xx: %" PRId64, st.warm_non2xx);
            printf("\n  errors (warm-up included): connect %" PRId64
                   ", reset %" PRId64 ", parse %" PRId64 ", timeout %"
                   PRId64 ", unsent %" PRId64 "; idle connections closed by"
                   " the server %" PRId64 "\n", st.err_connect,
                   st.err_reset, st.err_parse, st.err_timeout,
                   st.err_unsent, st.closed_idle);
            if (st.err_timeout || st.err_unsent)
                printf("  (timed-out and unsent requests are in the "
                       "percentiles at the time they had waited: a lower "
                       "bound)\n");
        }
        printf("summary target=%.0f rate=%.1f sent=%.1f p50=%u p90=%u p99=%u"
               " p999=%u max=%u ok=%" PRId64 " non2xx=%" PRId64
               " errors=%" PRId64 " warmup_non2xx=%" PRId64 " lag50=%u"
               " lag99=%u svc50=%u svc99=%u unsent=%" PRId64
               " backlog=%" PRId64 " statuses=",
               opt.rate, rate, sent,
               pct(sorted, nlat, 50), pct(sorted, nlat, 90),
               pct(sorted, nlat, 99), pct(sorted, nlat, 99.9),
               nlat ? sorted[nlat - 1] : 0, n2xx, non2xx, errors,
               st.warm_non2xx, pct(lag, nlag, 50), pct(lag, nlag, 99),
               pct(svc, nsvc, 50), pct(svc, nsvc, 99), st.err_unsent,
               st.max_backlog);
        k = 0;
        for (s = 100; s < 600; s++)
            if (st.status[s])
                printf("%s%d:%" PRId64, k++ ? "," : "", s, st.status[s]);
        if (st.other_status)
            printf("%sother:%" PRId64, k++ ? "," : "", st.other_status);
        printf("%s\n", k ? "" : "none");
    }

    for (s = 0; s < opt.nconns; s++)
        free(conns[s].out);
    free(conns);
    free(sorted);
    free(lat);
    free(lag);
    free(svc);
    free(done);
    free(req_head);
    free(opt.hdrs);
    free(opt.body);
    free((char *) opt.host);
    close(tfd);
    close(ep);
    return 0;
}
