/* linkdelay: a link with a round trip, for the `link` scenario (issue 23).
 *
 * usage: linkdelay TUN_A TUN_B ONE_WAY_US
 *
 * Creates two TUN devices (IFF_TUN, no packet info) and moves every IP packet read from one to
 * the other after holding it ONE_WAY_US microseconds: real packets, so TCP on either side sees
 * the real round trip (its handshake, its window, its retransmission timer), unlike a proxy
 * that delays bytes between two TCP connections. bench/link.py moves each device into a
 * network namespace of its own and gives it an address; this program stays where it started,
 * holding both devices (they vanish with it).
 *
 * A constant delay keeps each direction in order, so each direction is a FIFO ring. A full ring
 * drops the packet and counts it (TCP retransmits, as it would on a congested link). A line
 * "delay US" on stdin changes the one-way delay for the packets read from then on
 * (bench/link.py sets it once it has measured what the path costs without a delay).
 * Prints "READY" once both devices exist; on SIGTERM or SIGINT prints one line of counts and
 * its own CPU time, `linkdelay packets_ab=N packets_ba=N dropped=N cpu_us=N`, and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 8192 /* packets held per direction: 50 ms at ~160k packets/s */
/* Sleep until this long before a packet is due, then spin: a sleeping CPU on a VM takes tens to
 * hundreds of microseconds to wake, which would be added to the link's delay, unevenly. */
#define SPIN_NS 150000
#define MTU 2048

struct slot {
    int64_t due_ns;
    uint16_t len;
    unsigned char data[MTU];
};

struct ring {
    struct slot *slots;
    unsigned head, len;
    unsigned long long forwarded, dropped;
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "linkdelay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int tun_open(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die(name);
    return fd;
}

/* Read every packet waiting on `in` into `r`, due `delay_ns` from now. */
static void take(int in, struct ring *r, int64_t delay_ns) {
    for (;;) {
        if (r->len == SLOTS) { /* full: read it anyway, and drop it */
            unsigned char scratch[MTU];
            if (read(in, scratch, sizeof scratch) <= 0) return;
            r->dropped++;
            continue;
        }
        struct slot *s = &r->slots[(r->head + r->len) % SLOTS];
        ssize_t n = read(in, s->data, sizeof s->data);
        if (n <= 0) return; /* EAGAIN: drained */
        s->len = (uint16_t)n;
        s->due_ns = now_ns() + delay_ns;
        r->len++;
    }
}

/* Write every packet of `r` whose time has come to `out`; the ns until the next is due. */
static int64_t give(int out, struct ring *r) {
    while (r->len) {
        struct slot *s = &r->slots[r->head];
        int64_t wait = s->due_ns - now_ns();
        if (wait > 0) return wait;
        if (write(out, s->data, s->len) < 0 && errno == EAGAIN) return 100000; /* full: soon */
        r->forwarded++;
        r->head = (r->head + 1) % SLOTS;
        r->len--;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TUN_A TUN_B ONE_WAY_US\n", argv[0]);
        return 2;
    }
    char *end;
    long one_way_us = strtol(argv[3], &end, 10);
    if (*argv[3] == '\0' || *end != '\0' || one_way_us < 0 || one_way_us > 10000000) {
        fprintf(stderr, "linkdelay: bad ONE_WAY_US %s (0..10000000)\n", argv[3]);
        return 2;
    }
    int64_t delay_ns = (int64_t)one_way_us * 1000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Wake when a packet is due, not up to 50 us later (the default timer slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int fd[2] = {tun_open(argv[1]), tun_open(argv[2])};
    struct ring ring[2]; /* ring[0]: a -> b; ring[1]: b -> a */
    for (int i = 0; i < 2; i++) {
        memset(&ring[i], 0, sizeof ring[i]);
        ring[i].slots = malloc(sizeof(struct slot) * SLOTS);
        if (!ring[i].slots) die("malloc");
    }
    int stdin_open = 1;
    printf("READY\n");
    fflush(stdout);
    while (!stopping) {
        int64_t next = -1;
        for (int i = 0; i < 2; i++) {
            int64_t w = give(fd[1 - i], &ring[i]);
            if (w >= 0 && (next < 0 || w < next)) next = w;
        }
        struct pollfd p[3] = {{fd[0], POLLIN, 0}, {fd[1], POLLIN, 0}, {0, POLLIN, 0}};
        int64_t sleep_ns = next < 0 ? -1 : (next > SPIN_NS ? next - SPIN_NS : 0);
        struct timespec ts = {sleep_ns / 1000000000, sleep_ns % 1000000000};
        int n = ppoll(p, stdin_open ? 3 : 2, sleep_ns < 0 ? NULL : &ts, NULL);
        if (n < 0 && errno != EINTR) die("ppoll");
        for (int i = 0; i < 2 && n > 0; i++)
            if (p[i].revents & POLLIN) take(fd[i], &ring[i], delay_ns);
        if (n > 0 && stdin_open && (p[2].revents & (POLLIN | POLLHUP))) {
            char line[64];
            ssize_t got = read(0, line, sizeof line - 1);
            long us;
            if (got <= 0) {
                stdin_open = 0; /* the controller is gone: keep the last delay */
            } else {
                line[got] = '\0';
                if (sscanf(line, "delay %ld", &us) == 1 && us >= 0 && us <= 10000000) {
                    delay_ns = (int64_t)us * 1000;
                    printf("DELAY %ld\n", us); /* the controller waits for this */
                    fflush(stdout);
                }
            }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long cpu_us = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                       ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    printf("linkdelay packets_ab=%llu packets_ba=%llu dropped=%llu cpu_us=%lld\n",
           ring[0].forwarded, ring[1].forwarded, ring[0].dropped + ring[1].dropped, cpu_us);
    fflush(stdout);
    return 0;
}
