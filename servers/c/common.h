/* What the three C echo servers share: the command line, open_listenfd, the READY line, the echo
 * loop and the stop signal. The Python servers' contract, kept the same (servers/common.py):
 *
 *   usage: <server> HOST PORT BACKLOG [XRAY_FILE]     (servers/cli.py passes them, never a user)
 *   stdout: "READY <host> <port> <pid>" once listening; nothing else
 *   SIGTERM or SIGINT: stop within 2 s, exit 0, no child or zombie left behind
 *
 * Stop without a race: SIGTERM/SIGINT stay blocked except while the server sleeps in
 * ppoll()/epoll_pwait(), which unblock them atomically (a plain blocking accept() can miss a
 * signal that lands just before it). A stop that arrives while the server is busy stays pending,
 * and the loop asks sigpending() once per turn: ppoll and epoll_pwait return ready descriptors
 * without delivering a pending signal, so a server that never runs out of work (a full accept
 * queue, out of descriptors) would otherwise never see it.
 */
#ifndef ECHOBENCH_SERVERS_COMMON_H
#define ECHOBENCH_SERVERS_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536 /* one read per chunk, as the Python servers (servers/common.py CHUNK) */

static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

/* A stop was asked for: handled while sleeping, or still pending (blocked) now. */
static inline int stop_requested(void) {
    if (stopping) return 1;
    sigset_t pending;
    sigpending(&pending);
    return sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT);
}

static void die(const char *what) {
    fprintf(stderr, "servers: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CS:APP Fig. 11.19's open_listenfd, for one numeric address (IPv4, or IPv6 with a ':'). */
static int open_listenfd(const char *host, int port, int backlog) {
    int v6 = strchr(host, ':') != NULL;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) { errno = EINVAL; die(host); }
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) { errno = EINVAL; die(host); }
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) die("bind");
    if (listen(fd, backlog) < 0) die("listen");
    return fd;
}

static void announce_ready(int listenfd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    getsockname(listenfd, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    printf("READY %s %d %d\n", host, port, (int)getpid());
    fflush(stdout);
}

/* Block SIGTERM/SIGINT (see the header), handle them with on_stop; return the mask to sleep
 * with (the old one, stop signals open). */
static sigset_t stop_on_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that vanished is EPIPE on its own socket, not death */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    sigdelset(&old, SIGTERM);
    sigdelset(&old, SIGINT);
    return old;
}

/* Sleep until listenfd is readable or a signal arrives (stop signals open only in here). */
static inline void wait_readable(int listenfd, const sigset_t *sleep_mask) {
    struct pollfd p = {.fd = listenfd, .events = POLLIN};
    ppoll(&p, 1, NULL, sleep_mask);
}

/* Accept one client; -1 when none is queued (or the server ran out of descriptors: back off). */
static inline int accept_client(int listenfd, const sigset_t *sleep_mask) {
    int connfd = accept4(listenfd, NULL, NULL, SOCK_CLOEXEC);
    if (connfd >= 0) return connfd;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_readable(listenfd, sleep_mask);
    } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Back off 10 ms (as servers/common.py's Backoff), stop signals open meanwhile: a
         * server out of descriptors must still stop on SIGTERM. */
        struct timespec ts = {0, 10 * 1000 * 1000};
        ppoll(NULL, 0, &ts, sleep_mask);
    }
    return -1;
}

/* CS:APP Fig. 11.22's echo, bytes not lines: everything read is written back, in order, until
 * EOF or an error (a reset ends this client only). `first` (may be NULL) gets the time the first
 * echo was written. */
static inline void echo(int connfd, int64_t *first) {
    char buf[CHUNK]; /* on the stack: one per thread in c-thread */
    for (;;) {
        ssize_t n = read(connfd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(connfd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return;
            off += w;
        }
        if (first && !*first) *first = now_ns();
    }
}

#endif
