/* c-epoll: one thread, epoll, non-blocking descriptors: the ceiling of this machine for an echo,
 * against which the report puts every other server (CS:APP 12.2's I/O multiplexing, with the
 * readiness interface Linux offers instead of select).
 *
 * Each connection has one buffer of what was read and not yet written back. While that buffer
 * holds bytes the connection is not read (flow control, as the Python event servers do): a
 * client that never reads cannot make the server buffer without bound.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/epoll.h>

struct conn {
    int fd;
    size_t len, off; /* pending bytes: buf[off..len) */
    char buf[CHUNK];
};

static void conn_close(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Write what is pending; 0 when done, 1 when the socket is full, -1 on error. */
static int flush_pending(struct conn *c) {
    while (c->off < c->len) {
        ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        if (w <= 0) return -1;
        c->off += (size_t)w;
    }
    c->off = c->len = 0;
    return 0;
}

static void serve(int ep, struct conn *c, uint32_t events) {
    if (c->len) { /* waiting to write: EPOLLOUT */
        int r = flush_pending(c);
        if (r < 0) { conn_close(ep, c); return; }
        if (r > 0) return;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev); /* drained: read again */
        return;
    }
    (void)events;
    for (;;) {
        ssize_t n = read(c->fd, c->buf, sizeof c->buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { conn_close(ep, c); return; } /* EOF or reset */
        c->len = (size_t)n;
        c->off = 0;
        int r = flush_pending(c);
        if (r < 0) { conn_close(ep, c); return; }
        if (r > 0) { /* the client is not reading: stop reading it until it does */
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        if ((size_t)n < sizeof c->buf) return; /* drained the socket: wait for more */
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG\n", argv[0]);
        return 2;
    }
    int listenfd = open_listenfd(argv[1], atoi(argv[2]), atoi(argv[3]));
    sigset_t sleep_mask = stop_on_signals();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listenfd, &lev);
    announce_ready(listenfd);
    struct epoll_event events[256];
    while (!stop_requested()) {
        int n = epoll_pwait(ep, events, 256, -1, &sleep_mask);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) { /* the listening socket: accept all queued */
                for (;;) {
                    int fd = accept4(listenfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM) {
                            struct timespec ts = {0, 10 * 1000 * 1000};
                            nanosleep(&ts, NULL); /* back off; the client stays queued */
                        }
                        break;
                    }
                    struct conn *c = malloc(sizeof *c);
                    if (!c) { close(fd); continue; }
                    c->fd = fd;
                    c->len = c->off = 0;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
            } else {
                serve(ep, events[i].data.ptr, events[i].events);
            }
        }
    }
    close(listenfd);
    return 0; /* the kernel closes every connection */
}
