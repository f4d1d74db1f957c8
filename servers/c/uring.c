/* c-uring: one thread, io_uring, the way it is meant to be used: the second ceiling beside
 * c-epoll (CS:APP 12.2's I/O multiplexing, with Linux's completion interface instead of its
 * readiness one).
 *
 * epoll says "this socket is readable", and the server then makes a read and a write system
 * call of its own for every echo. io_uring takes requests and returns completions through two
 * rings shared with the kernel, so one io_uring_enter() submits every send the last batch of
 * completions asked for and waits for the next batch:
 *
 *   - one multishot accept on the listening socket: every new client is a completion;
 *   - one multishot receive per connection, reading into a provided buffer ring (the kernel
 *     picks a free buffer for each arrival, so no buffer is tied up by an idle connection);
 *   - a send per received buffer, at most one in flight per connection (sends of one stream
 *     must stay in order), the next queued behind it; a finished send returns its buffer to
 *     the ring;
 *   - the stop signals (SIGTERM, SIGINT) as a read on a signalfd, through the same ring.
 *
 * Flow control as c-epoll's: a connection whose client does not read holds at most PAUSE_AT
 * buffers; then its receive is cancelled, and armed again once its queue has drained.
 * Out of descriptors (EMFILE), the multishot accept ends; it is armed again after a 10 ms
 * timeout, also through the ring, so the server backs off without a busy spin.
 *
 * `echobench_uring_stats` at exit (stderr, when ECHOBENCH_SERVER_STATS is set): the system
 * calls this server made (io_uring_enter, counted here) and the chunks it echoed, for
 * `make bench-servers`' system calls per request.
 */
#include "common.h"

#include <liburing.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

#define RING_ENTRIES 4096
#define BUF_COUNT 4096 /* a power of two (the buffer ring's mask) */
#define BUF_SIZE 16384
#define BGID 0
#define PAUSE_AT 8 /* a client that does not read: stop receiving at this many buffers held */

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SIGNAL, OP_TIMEOUT, OP_CANCEL };

struct conn {
    int fd;
    int recv_armed; /* the multishot receive is live (its last completion not yet seen) */
    int send_busy;  /* a send is in flight */
    int eof;        /* the client closed, or the connection failed: close once drained */
    int paused;     /* receive cancelled for flow control (or for want of buffers) */
    /* Received buffers not yet sent back, in order. It grows as needed: a burst can bring
     * many buffers before the cancel that pauses the receive takes effect, and the ring of
     * BUF_COUNT buffers is the bound (an empty ring ends every receive: -ENOBUFS). */
    unsigned qhead, qlen, qcap;
    struct pend { uint16_t bid; uint32_t len, off; } *q;
    struct conn *next_waiting; /* on the list of connections waiting for free buffers */
};

static struct io_uring ring;
static struct io_uring_buf_ring *bufring;
static char *buffers;
static struct conn *waiting; /* receives ended by -ENOBUFS, armed again when a buffer returns */
static unsigned long long enters, echoed;

static uint64_t tag(void *p, enum op op) { return (uint64_t)(uintptr_t)p | (uint64_t)op; }
static enum op tag_op(uint64_t ud) { return (enum op)(ud & 7); }
static struct conn *tag_conn(uint64_t ud) { return (struct conn *)(uintptr_t)(ud & ~7ULL); }

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    while (!sqe) { /* the submission ring is full: hand it to the kernel and take a slot */
        io_uring_submit(&ring);
        enters++;
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void arm_accept(int listenfd) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, listenfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_ACCEPT));
}

static void arm_recv(struct conn *c) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
    c->recv_armed = 1;
    c->paused = 0;
}

static void send_head(struct conn *c) {
    unsigned i = c->qhead;
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, c->fd, buffers + (size_t)c->q[i].bid * BUF_SIZE + c->q[i].off,
                       c->q[i].len - c->q[i].off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
    c->send_busy = 1;
}

static void give_back(uint16_t bid) {
    io_uring_buf_ring_add(bufring, buffers + (size_t)bid * BUF_SIZE, BUF_SIZE, bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(bufring, 1);
    while (waiting) { /* buffers again: the receives that ran out may go on */
        struct conn *c = waiting;
        waiting = c->next_waiting;
        c->next_waiting = NULL;
        if (!c->eof && !c->recv_armed) arm_recv(c);
    }
}

/* Free a connection once nothing of it is in the kernel's hands. */
static void maybe_free(struct conn *c) {
    if (!c->eof || c->recv_armed || c->send_busy) return;
    while (c->qlen) {
        give_back(c->q[c->qhead].bid);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    for (struct conn **p = &waiting; *p; p = &(*p)->next_waiting)
        if (*p == c) { *p = c->next_waiting; break; }
    close(c->fd);
    free(c->q);
    free(c);
}

static void fail(struct conn *c) {
    c->eof = 1;
    shutdown(c->fd, SHUT_RDWR); /* ends a live multishot receive: its last completion comes */
    maybe_free(c);
}

/* Double the queue, keeping its order; 0 when out of memory. */
static int grow(struct conn *c) {
    unsigned cap = c->qcap ? 2 * c->qcap : 16;
    struct pend *q = malloc(sizeof *q * cap);
    if (!q) return 0;
    for (unsigned i = 0; i < c->qlen; i++) q[i] = c->q[(c->qhead + i) % c->qcap];
    free(c->q);
    c->q = q;
    c->qcap = cap;
    c->qhead = 0;
    return 1;
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe) {
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (!more) c->recv_armed = 0;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (c->eof) { /* a late arrival on a connection already failing */
            give_back(bid);
            maybe_free(c);
            return;
        }
        if (c->qlen == c->qcap && !grow(c)) { /* out of memory: end this client only */
            give_back(bid);
            fail(c);
            return;
        }
        unsigned tail = (c->qhead + c->qlen) % c->qcap;
        c->q[tail].bid = bid;
        c->q[tail].len = (uint32_t)cqe->res;
        c->q[tail].off = 0;
        c->qlen++;
        echoed++;
        if (!c->send_busy) send_head(c);
        if (c->qlen >= PAUSE_AT && c->recv_armed && !c->paused) { /* a client not reading */
            struct io_uring_sqe *sqe = sqe_get();
            io_uring_prep_cancel64(sqe, tag(c, OP_RECV), 0);
            io_uring_sqe_set_data64(sqe, tag(NULL, OP_CANCEL));
            c->paused = 1;
        }
        if (!more && !c->paused && !c->eof) arm_recv(c); /* ended on its own: go on */
        return;
    }
    if (more) return;
    if (cqe->res == -ENOBUFS) { /* the buffer ring is empty: wait for a send to return one */
        c->next_waiting = waiting;
        waiting = c;
        return;
    }
    if (cqe->res == -ECANCELED && c->paused && !c->eof) { /* flow control */
        if (c->qlen <= PAUSE_AT / 2) arm_recv(c); /* drained meanwhile: read again now */
        return; /* else on_send arms it again once the queue drains */
    }
    c->eof = 1; /* 0: the client closed; < 0: reset or another error */
    maybe_free(c);
}

static void on_send(struct conn *c, int res) {
    c->send_busy = 0;
    if (res <= 0) { /* EPIPE, ECONNRESET: this client is gone */
        fail(c);
        return;
    }
    unsigned i = c->qhead;
    c->q[i].off += (uint32_t)res;
    if (c->q[i].off < c->q[i].len) { /* a short send: the rest, in order */
        send_head(c);
        return;
    }
    give_back(c->q[i].bid);
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    if (c->qlen) send_head(c);
    if (c->paused && !c->recv_armed && c->qlen <= PAUSE_AT / 2 && !c->eof) arm_recv(c);
    maybe_free(c);
}

static void arm_signal(int sfd, struct signalfd_siginfo *si) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_read(sqe, sfd, si, sizeof *si, 0);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_SIGNAL));
}

static void arm_backoff(struct __kernel_timespec *ts) {
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_timeout(sqe, ts, 0, 0);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_TIMEOUT));
}

static void setup_buffers(void) {
    size_t ring_bytes = sizeof(struct io_uring_buf) * BUF_COUNT;
    bufring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (bufring == MAP_FAILED) die("mmap buffer ring");
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)bufring,
                                   .ring_entries = BUF_COUNT, .bgid = BGID};
    int r = io_uring_register_buf_ring(&ring, &reg, 0);
    if (r < 0) { errno = -r; die("io_uring_register_buf_ring"); }
    buffers = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (!buffers) die("malloc buffers");
    io_uring_buf_ring_init(bufring);
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(bufring, buffers + (size_t)i * BUF_SIZE, BUF_SIZE, (uint16_t)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(bufring, BUF_COUNT);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG\n", argv[0]);
        return 2;
    }
    int listenfd = open_listenfd(argv[1], atoi(argv[2]), atoi(argv[3]));
    stop_on_signals(); /* SIGTERM/SIGINT blocked: they arrive through the signalfd below */
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    int sfd = signalfd(-1, &stops, SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    /* One thread submits, and completions are handled only when it waits: the kernel defers
     * its task work to then instead of interrupting the server (Linux 6.1). */
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    if (r == -EINVAL) { /* an older kernel: the plain ring */
        memset(&params, 0, sizeof params);
        r = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    }
    if (r < 0) { errno = -r; die("io_uring_queue_init"); }
    setup_buffers();
    struct signalfd_siginfo si;
    struct __kernel_timespec backoff = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
    arm_signal(sfd, &si);
    arm_accept(listenfd);
    announce_ready(listenfd);
    while (!stop_requested()) {
        r = io_uring_submit_and_wait(&ring, 1);
        enters++;
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) { errno = -r; die("io_uring_enter"); }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            switch (tag_op(ud)) {
            case OP_ACCEPT:
                if (cqe->res >= 0) {
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) { close(cqe->res); break; }
                    c->fd = cqe->res;
                    arm_recv(c);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) { /* ended: out of descriptors, ... */
                    if (cqe->res < 0) arm_backoff(&backoff); /* then accept again */
                    else arm_accept(listenfd);
                }
                break;
            case OP_RECV: on_recv(tag_conn(ud), cqe); break;
            case OP_SEND: on_send(tag_conn(ud), cqe->res); break;
            case OP_SIGNAL: stopping = 1; break;
            case OP_TIMEOUT: arm_accept(listenfd); break;
            case OP_CANCEL: break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    if (getenv("ECHOBENCH_SERVER_STATS"))
        fprintf(stderr, "echobench_uring_stats io_uring_enter=%llu chunks=%llu\n", enters, echoed);
    close(listenfd);
    io_uring_queue_exit(&ring);
    return 0; /* the kernel closes every connection */
}
