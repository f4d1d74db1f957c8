/* The native floor for the load generator: a closed-loop epoll echo client in C.
 *
 * usage: epoll_client HOST PORT CONNECTIONS SIZE SECONDS [persistent|per-request [SOURCES]]
 * persistent (the default): opens CONNECTIONS persistent connections, keeps one SIZE-byte
 * message in flight on each (each message stamped with a per-connection counter, every echo
 * compared byte for byte).
 * per-request: CONNECTIONS slots, each repeating connect, send one message, read the echo,
 * close; with SOURCES > 0 the sockets are bound to 127.0.0.2..SOURCES+1 with
 * IP_BIND_ADDRESS_NO_PORT, as the Python load generator does on loopback, so the kernel's port
 * allocator is not what is measured. Per connection: socket, setsockopt, bind, connect, send,
 * recv, close and one epoll_ctl (close drops the socket from the epoll set).
 * After SECONDS it prints one line:
 *   requests=N errors=E wall_s=W user_s=U sys_s=S
 * selfbench.py compares the Python load generator's CPU per request (per connection) with this
 * one's: the goal is within 1.2x of it. Bounded: loopback use only, fixed duration.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

struct conn {
    int fd;
    uint64_t seq;
    size_t got;
    size_t sent; /* per-request: bytes of msg sent so far */
    int src;     /* per-request: index of the next source address */
    unsigned char *msg;
    unsigned char *buf;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_next(struct conn *c, size_t size) {
    c->seq++;
    memcpy(c->msg, &c->seq, size < 8 ? size : 8);
    c->got = 0;
    size_t off = 0;
    while (off < size) { /* small messages go in one write; large ones may block briefly */
        ssize_t n = write(c->fd, c->msg + off, size - off);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* per-request: open the slot's next connection and send its message; -1 on a failure. */
static int pr_start(int ep, struct conn *c, const struct sockaddr_in *dst,
                    const struct sockaddr_in *srcs, int nsrc, size_t size) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    if (nsrc > 0) {
        int one = 1;
        setsockopt(c->fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (const struct sockaddr *)&srcs[c->src], sizeof srcs[0]) < 0) goto fail;
        c->src = (c->src + 1) % nsrc;
    }
    if (connect(c->fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS)
        goto fail;
    c->seq++;
    memcpy(c->msg, &c->seq, size < 8 ? size : 8);
    c->got = c->sent = 0;
    /* On loopback the handshake is done when connect returns: send at once (EAGAIN: wait). */
    ssize_t n = send(c->fd, c->msg, size, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) goto fail;
    c->sent = n > 0 ? (size_t)n : 0;
    struct epoll_event ev = {.events = EPOLLIN | (c->sent < size ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) goto fail;
    return 0;
fail:
    close(c->fd);
    c->fd = -1;
    return -1;
}

static int run_per_request(int ep, struct conn *conns, int nconn, const struct sockaddr_in *dst,
                           int nsrc, size_t size, double end, long *requests, long *errors) {
    struct sockaddr_in srcs[250];
    for (int i = 0; i < nsrc; i++) {
        srcs[i] = (struct sockaddr_in){.sin_family = AF_INET};
        srcs[i].sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)i);
    }
    for (int i = 0; i < nconn; i++) {
        conns[i].src = nsrc > 0 ? i % nsrc : 0;
        while (pr_start(ep, &conns[i], dst, srcs, nsrc, size) < 0) {
            (*errors)++;
            if (now_s() >= end) return 0;
        }
    }
    struct epoll_event evs[256];
    while (now_s() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            int failed = 0;
            if (c->sent < size) {
                ssize_t w = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) failed = 1;
                else if (w > 0) c->sent += (size_t)w;
                if (!failed && c->sent == size) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!failed && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                ssize_t got = recv(c->fd, c->buf + c->got, size - c->got, 0);
                if (got < 0 && errno == EAGAIN) continue;
                if (got <= 0) failed = 1;
                else c->got += (size_t)got;
            } else if (!failed) {
                continue;
            }
            if (!failed && c->got < size) continue;
            if (!failed && memcmp(c->buf, c->msg, size) != 0) failed = 1;
            close(c->fd);
            if (failed) (*errors)++;
            else (*requests)++;
            while (pr_start(ep, c, dst, srcs, nsrc, size) < 0) {
                (*errors)++;
                if (now_s() >= end) return 0;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE SECONDS [persistent|per-request [SOURCES]]\n",
                argv[0]);
        return 2;
    }
    int per_request = argc >= 7 && strcmp(argv[6], "per-request") == 0;
    int nsrc = argc == 8 ? atoi(argv[7]) : 0;
    if ((argc >= 7 && !per_request && strcmp(argv[6], "persistent") != 0) || nsrc < 0 || nsrc > 250) {
        fprintf(stderr, "epoll_client: bad mode or source count\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double seconds = atof(argv[5]);
    if (port <= 0 || nconn <= 0 || nconn > 10000 || size == 0 || size > (1 << 20) ||
        seconds <= 0 || seconds > 3600) {
        fprintf(stderr, "epoll_client: bad arguments\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "epoll_client: bad host %s\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    if (per_request) {
        for (int i = 0; i < nconn; i++) {
            conns[i].msg = malloc(size);
            conns[i].buf = malloc(size);
            for (size_t k = 0; k < size; k++) conns[i].msg[k] = (unsigned char)(k * 7 + (size_t)i);
            conns[i].seq = (uint64_t)i << 40;
        }
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        double t0 = now_s();
        long requests = 0, errors = 0;
        run_per_request(ep, conns, nconn, &sa, nsrc, size, t0 + seconds, &requests, &errors);
        double wall = now_s() - t0;
        getrusage(RUSAGE_SELF, &r1);
        double user = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6;
        double sys = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
        printf("requests=%ld errors=%ld wall_s=%.6f user_s=%.6f sys_s=%.6f\n", requests, errors, wall, user, sys);
        for (int i = 0; i < nconn; i++) {
            if (conns[i].fd >= 0) close(conns[i].fd);
            free(conns[i].msg);
            free(conns[i].buf);
        }
        free(conns);
        close(ep);
        return errors ? 1 : 0;
    }
    for (int i = 0; i < nconn; i++) {
        struct conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("epoll_client: connect");
            return 1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->msg = malloc(size);
        c->buf = malloc(size);
        for (size_t k = 0; k < size; k++) c->msg[k] = (unsigned char)(k * 7 + (size_t)i);
        c->seq = (uint64_t)i << 40;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = now_s(), end = t0 + seconds;
    long requests = 0, errors = 0;
    for (int i = 0; i < nconn; i++)
        if (send_next(&conns[i], size) < 0) errors++;
    struct epoll_event evs[256];
    while (now_s() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->got, size - c->got);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)got;
            if (c->got < size) continue;
            if (memcmp(c->buf, c->msg, size) != 0) errors++;
            else requests++;
            if (send_next(c, size) < 0) errors++;
        }
    }
    double wall = now_s() - t0;
    getrusage(RUSAGE_SELF, &r1);
    double user = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6;
    double sys = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("requests=%ld errors=%ld wall_s=%.6f user_s=%.6f sys_s=%.6f\n", requests, errors, wall, user, sys);
    for (int i = 0; i < nconn; i++) {
        close(conns[i].fd);
        free(conns[i].msg);
        free(conns[i].buf);
    }
    free(conns);
    close(ep);
    return errors ? 1 : 0;
}
