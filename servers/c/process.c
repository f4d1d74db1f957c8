/* c-process: CS:APP Fig. 12.5 as the book writes it, the floor under servers/process.py.
 *
 * The parent accepts and forks a child per client; the child closes its copy of the listening
 * descriptor, echoes, closes and exits; the parent closes its copy of the connected descriptor
 * (the socket is reference-counted: without that close the client never sees the end). A
 * SIGCHLD handler reaps with waitpid(-1, WNOHANG) in a loop, because pending signals do not
 * queue (8.5.5). SIGCHLD is blocked across fork and the record of the child (Fig. 8.40's race):
 * in C that costs two sigprocmask calls, nothing else.
 *
 * The parent records its children's pids so a stop can end them: SIGTERM to each, reap, SIGKILL
 * whatever outlives 1.5 s, exit 0 (the Python servers' contract, servers/forking.py).
 *
 * With an X-ray file (servers/xray.py has the format), every connection's steps are stamped on
 * CLOCK_MONOTONIC: accept, the parent's fork() call, the parent's close of connfd; in the child
 * (into a shared mapping): its start, the close of listenfd, its first echo, its exit; in the
 * handler: when it ran and when wait4 (waitpid plus the child's rusage) reaped the child.
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define MAX_LIVE 65536     /* open-addressing set of live pids (a power of two) */
#define XRAY_SLOTS 65536   /* connections recorded per run; later ones are counted as dropped */
#define CHILD_FIELDS 5     /* start, listen_closed, exec (0 here), first_echo, exit */

static pid_t live[MAX_LIVE]; /* 0 empty, -1 deleted */
static int nlive;

static void live_add(pid_t pid) {
    unsigned h = (unsigned)pid & (MAX_LIVE - 1);
    while (live[h] > 0) h = (h + 1) & (MAX_LIVE - 1);
    live[h] = pid;
    nlive++;
}

static void live_del(pid_t pid) { /* async-signal-safe: plain memory, SIGCHLD blocked in adds */
    unsigned h = (unsigned)pid & (MAX_LIVE - 1);
    for (int i = 0; i < MAX_LIVE && live[h] != 0; i++, h = (h + 1) & (MAX_LIVE - 1)) {
        if (live[h] == pid) {
            live[h] = -1;
            nlive--;
            return;
        }
    }
}

/* ---- X-ray (only with a file): parent-side records, reaps, and the children's shared slots */
struct conn_rec { int64_t slot, pid, accept, fork0, fork1, closed; };
struct reap_rec { int64_t pid, handler, reaped, minflt, majflt, utime_us, stime_us, nvcsw, nivcsw; };
static const char *xray_path;
static struct conn_rec *conns;
static struct reap_rec *reaps;
static volatile int64_t nconns, nreaps, xray_dropped;
static int64_t *slots; /* MAP_SHARED: children write their stamps here */

static void xray_open(void) {
    conns = calloc(XRAY_SLOTS, sizeof *conns);
    reaps = calloc(XRAY_SLOTS, sizeof *reaps);
    slots = mmap(NULL, (size_t)XRAY_SLOTS * CHILD_FIELDS * 8, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!conns || !reaps || slots == MAP_FAILED) die("xray memory");
}

static long status_kb(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    char line[256];
    long kb = -1;
    size_t klen = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0) { kb = atol(line + klen); break; }
    fclose(f);
    return kb;
}

static void xray_write(void) {
    FILE *f = fopen(xray_path, "w");
    if (!f) { fprintf(stderr, "servers: xray: %s: %s\n", xray_path, strerror(errno)); return; }
    fprintf(f, "xray 1 c-process\n");
    for (int64_t i = 0; i < nconns; i++) {
        struct conn_rec *c = &conns[i];
        fprintf(f, "conn %ld %ld %ld %ld %ld %ld\n", (long)c->slot, (long)c->pid, (long)c->accept,
                (long)c->fork0, (long)c->fork1, (long)c->closed);
        int64_t *s = &slots[c->slot * CHILD_FIELDS];
        if (s[0])
            fprintf(f, "child %ld %ld %ld %ld %ld %ld\n", (long)c->slot, (long)s[0], (long)s[1],
                    (long)s[2], (long)s[3], (long)s[4]);
    }
    for (int64_t i = 0; i < nreaps; i++) {
        struct reap_rec *r = &reaps[i];
        fprintf(f, "reap %ld %ld %ld %ld %ld %ld %ld %ld %ld\n", (long)r->pid, (long)r->handler,
                (long)r->reaped, (long)r->minflt, (long)r->majflt, (long)r->utime_us,
                (long)r->stime_us, (long)r->nvcsw, (long)r->nivcsw);
    }
    fprintf(f, "parent %ld %ld %ld\n", status_kb("/proc/self/status", "VmPTE:"),
            status_kb("/proc/self/smaps_rollup", "Pss:"), status_kb("/proc/self/status", "VmRSS:"));
    fprintf(f, "dropped %ld\n", (long)xray_dropped);
    fclose(f);
}

static void record_reap(pid_t pid, int64_t handler, const struct rusage *ru) {
    if (!xray_path) return;
    if (nreaps >= XRAY_SLOTS) { xray_dropped++; return; }
    struct reap_rec *r = &reaps[nreaps++];
    r->pid = pid;
    r->handler = handler;
    r->reaped = now_ns();
    r->minflt = ru->ru_minflt;
    r->majflt = ru->ru_majflt;
    r->utime_us = ru->ru_utime.tv_sec * 1000000L + ru->ru_utime.tv_usec;
    r->stime_us = ru->ru_stime.tv_sec * 1000000L + ru->ru_stime.tv_usec;
    r->nvcsw = ru->ru_nvcsw;
    r->nivcsw = ru->ru_nivcsw;
}

/* ---- the book's handler: reap every child that has exited, in a loop */
static void sigchld_handler(int sig) {
    (void)sig;
    int olderrno = errno;
    pid_t pid;
    if (!xray_path) {
        while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) live_del(pid);
    } else {
        int64_t handler = now_ns();
        struct rusage ru;
        while ((pid = wait4(-1, NULL, WNOHANG, &ru)) > 0) {
            live_del(pid);
            record_reap(pid, handler, &ru);
        }
    }
    errno = olderrno;
}

static void end_children(void) {
    signal(SIGCHLD, SIG_DFL); /* reap here from now on (the handler's records stay valid) */
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) kill(live[i], SIGTERM);
    int64_t deadline = now_ns() + 1500000000LL;
    int killed = 0;
    for (;;) {
        struct rusage ru;
        pid_t pid = wait4(-1, NULL, killed ? 0 : WNOHANG, &ru);
        if (pid < 0) break; /* ECHILD: none left */
        if (pid > 0) { /* reaped at the stop: still the connection's end, for the X-ray */
            live_del(pid);
            record_reap(pid, now_ns(), &ru);
            continue;
        }
        if (now_ns() > deadline) {
            fprintf(stderr, "servers: %d children ignored SIGTERM; killing them\n", nlive);
            for (int i = 0; i < MAX_LIVE; i++)
                if (live[i] > 0) kill(live[i], SIGKILL);
            killed = 1;
            continue;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT BACKLOG [XRAY_FILE]\n", argv[0]);
        return 2;
    }
    if (argc > 4 && argv[4][0]) {
        xray_path = argv[4];
        xray_open();
    }
    int listenfd = open_listenfd(argv[1], atoi(argv[2]), atoi(argv[3]));
    sigset_t sleep_mask = stop_on_signals();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sigchld_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t chld, prev;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    announce_ready(listenfd);

    while (!stop_requested()) {
        int connfd = accept_client(listenfd, &sleep_mask);
        if (connfd < 0) continue;
        int64_t t_accept = xray_path ? now_ns() : 0;
        int64_t slot = nconns < XRAY_SLOTS ? nconns : -1;
        sigprocmask(SIG_BLOCK, &chld, &prev); /* Fig. 8.40: record the child before reaping it */
        int64_t t_fork0 = xray_path ? now_ns() : 0;
        pid_t pid = fork();
        if (pid == 0) { /* Child */
            int64_t *s = xray_path && slot >= 0 ? &slots[slot * CHILD_FIELDS] : NULL;
            if (s) s[0] = now_ns();
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGCHLD, SIG_DFL);
            sigprocmask(SIG_SETMASK, &sleep_mask, NULL); /* stop signals open again */
            close(listenfd); /* Child closes its listening socket */
            if (s) s[1] = now_ns();
            int64_t first = 0;
            echo(connfd, s ? &first : NULL); /* Child services client */
            /* Stamped before the close: the client sees EOF at the close and may stop the
             * server at once, whose SIGTERM would otherwise land before the stamp. */
            if (s) { s[3] = first; s[4] = now_ns(); }
            close(connfd); /* Child closes connection with client */
            _exit(0);      /* Child exits */
        }
        int64_t t_fork1 = xray_path ? now_ns() : 0;
        if (pid > 0) live_add(pid);
        sigprocmask(SIG_SETMASK, &prev, NULL);
        if (pid < 0) fprintf(stderr, "servers: fork: %s\n", strerror(errno)); /* drop client */
        close(connfd); /* Parent closes connected socket (important!) */
        if (xray_path && pid > 0) {
            if (slot < 0) {
                xray_dropped++;
            } else {
                conns[slot] = (struct conn_rec){slot, pid, t_accept, t_fork0, t_fork1, now_ns()};
                nconns++;
            }
        }
    }
    close(listenfd);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    end_children();
    if (xray_path) xray_write();
    return 0;
}
