/* Like for like in C (CS:APP 12.1.2): the same mechanism between two threads and between two
 * processes, and what each model must do to share one count.
 *
 * usage: share MODE ROUNDS BATCH CPU_A CPU_B
 *   pipe_thread     1-byte round trip over two pipes to an echo *thread* (pipe_rtt does the
 *                   same to an echo process): per round trip
 *   mutex_thread    2 threads, each BATCH increments of one counter under a pthread mutex:
 *                   per increment (round wall time / increments of both)
 *   mutex_process   2 processes, the same on a counter and a PTHREAD_PROCESS_SHARED mutex that
 *                   live in a MAP_SHARED mapping set up before fork: per increment
 *   plain_thread    1 thread adds to a variable it shares (volatile: one load and one store
 *                   per increment, as an unoptimised shared count would): per increment
 *   pipe_message    a forked child sends one 16-byte record per increment over a pipe and the
 *                   parent reads and sums them: the count shared by message, per increment
 * Every round checks the final count (a lost update fails the program: a fast wrong counter
 * is not a result). CPU_A and CPU_B pin the two ends; equal numbers put both on one CPU.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
    pthread_mutex_t lock;
    long long count;
    long long start[2], end[2];
};

struct worker {
    struct shared *sh;
    int index, cpu;
    long batch;
    int in_fd, out_fd; /* pipe_thread: the echo thread's ends */
};

static void locked_increments(struct shared *sh, int index, long batch) {
    sh->start[index] = now_ns();
    for (long i = 0; i < batch; i++) {
        pthread_mutex_lock(&sh->lock);
        sh->count++;
        pthread_mutex_unlock(&sh->lock);
    }
    sh->end[index] = now_ns();
}

static void *mutex_worker(void *arg) {
    struct worker *w = arg;
    pin_to(w->cpu);
    locked_increments(w->sh, w->index, w->batch);
    return NULL;
}

static void *echo_thread(void *arg) {
    struct worker *w = arg;
    pin_to(w->cpu);
    char c;
    while (read(w->in_fd, &c, 1) == 1)
        if (write(w->out_fd, &c, 1) != 1)
            break;
    return NULL;
}

static double wall_per_op(const struct shared *sh, long total) {
    long long first = sh->start[0] < sh->start[1] ? sh->start[0] : sh->start[1];
    long long last = sh->end[0] > sh->end[1] ? sh->end[0] : sh->end[1];
    return (double)(last - first) / 1000.0 / (double)total;
}

static double round_mutex_thread(long batch, int cpu_a, int cpu_b) {
    struct shared sh = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct worker w[2] = {{&sh, 0, cpu_a, batch, -1, -1}, {&sh, 1, cpu_b, batch, -1, -1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, mutex_worker, &w[i]) != 0)
            die("pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (sh.count != 2 * batch)
        die("lost updates (threads)");
    return wall_per_op(&sh, 2 * batch);
}

static double round_mutex_process(long batch, int cpu_a, int cpu_b) {
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    if (sh == MAP_FAILED)
        die("mmap");
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0)
        die("pthread_mutexattr_setpshared");
    pthread_mutex_init(&sh->lock, &attr);
    sh->count = 0;
    pid_t pid[2];
    int cpus[2] = {cpu_a, cpu_b};
    for (int i = 0; i < 2; i++) {
        pid[i] = fork();
        if (pid[i] < 0)
            die("fork");
        if (pid[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            pin_to(cpus[i]);
            locked_increments(sh, i, batch);
            _exit(0);
        }
    }
    for (int i = 0; i < 2; i++) {
        int status;
        if (waitpid(pid[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
            die("counter process");
    }
    if (sh->count != 2 * batch)
        die("lost updates (processes)");
    double per_op = wall_per_op(sh, 2 * batch);
    pthread_mutex_destroy(&sh->lock);
    munmap(sh, sizeof *sh);
    return per_op;
}

static double round_plain_thread(long batch, int cpu_a) {
    static volatile long long count; /* shared by every thread of the process, as a global is */
    pin_to(cpu_a);
    count = 0;
    long long t0 = now_ns();
    for (long i = 0; i < batch; i++)
        count = count + 1;
    long long t1 = now_ns();
    if (count != batch)
        die("plain count");
    return (double)(t1 - t0) / 1000.0 / (double)batch;
}

static double round_pipe_message(long batch, int cpu_a, int cpu_b) {
    int fds[2];
    if (pipe(fds) < 0)
        die("pipe");
    pin_to(cpu_a);
    long long t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        pin_to(cpu_b);
        int64_t rec[2] = {1, 1}; /* (bytes, updates), as servers/counter.py's records */
        for (long i = 0; i < batch; i++)
            if (write(fds[1], rec, sizeof rec) != sizeof rec)
                _exit(1);
        _exit(0);
    }
    close(fds[1]);
    int64_t buf[2 * 256];
    long long sum = 0;
    size_t partial = 0; /* bytes of a record cut by the previous read */
    for (;;) {
        ssize_t n = read(fds[0], (char *)buf + partial, sizeof buf - partial);
        if (n < 0)
            die("read");
        if (n == 0)
            break;
        size_t have = partial + (size_t)n, whole = have / (2 * sizeof(int64_t));
        for (size_t i = 0; i < whole; i++)
            sum += buf[2 * i];
        partial = have % (2 * sizeof(int64_t));
        memmove(buf, (char *)buf + whole * 2 * sizeof(int64_t), partial);
    }
    long long t1 = now_ns();
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
        die("message child");
    if (sum != batch)
        die("lost messages");
    return (double)(t1 - t0) / 1000.0 / (double)batch;
}

static void run_pipe_thread(long rounds, long batch, int cpu_a, int cpu_b, double *samples) {
    int to_echo[2], back[2];
    if (pipe(to_echo) < 0 || pipe(back) < 0)
        die("pipe");
    struct worker w = {NULL, 1, cpu_b, batch, to_echo[0], back[1]};
    pthread_t t;
    if (pthread_create(&t, NULL, echo_thread, &w) != 0)
        die("pthread_create");
    pin_to(cpu_a);
    char c = 'x';
    for (long r = -1; r < rounds; r++) {
        long long t0 = now_ns();
        for (long i = 0; i < batch; i++)
            if (write(to_echo[1], &c, 1) != 1 || read(back[0], &c, 1) != 1)
                die("round trip");
        long long t1 = now_ns();
        if (r >= 0)
            samples[r] = (double)(t1 - t0) / 1000.0 / (double)batch;
    }
    close(to_echo[1]); /* EOF ends the echo thread */
    pthread_join(t, NULL);
    close(to_echo[0]);
    close(back[0]);
    close(back[1]);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODE ROUNDS BATCH CPU_A CPU_B\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long rounds = parse_count(argv[2], "ROUNDS", 1);
    long batch = parse_count(argv[3], "BATCH", 1);
    int cpu_a = (int)parse_count(argv[4], "CPU_A", 0);
    int cpu_b = (int)parse_count(argv[5], "CPU_B", 0);
    double *samples = malloc(sizeof(double) * (size_t)rounds);
    if (!samples)
        die("malloc");
    if (strcmp(mode, "pipe_thread") == 0) {
        run_pipe_thread(rounds, batch, cpu_a, cpu_b, samples);
    } else {
        for (long r = -1; r < rounds; r++) { /* round -1 warms up */
            double s;
            if (strcmp(mode, "mutex_thread") == 0)
                s = round_mutex_thread(batch, cpu_a, cpu_b);
            else if (strcmp(mode, "mutex_process") == 0)
                s = round_mutex_process(batch, cpu_a, cpu_b);
            else if (strcmp(mode, "plain_thread") == 0)
                s = round_plain_thread(batch, cpu_a);
            else if (strcmp(mode, "pipe_message") == 0)
                s = round_pipe_message(batch, cpu_a, cpu_b);
            else {
                fprintf(stderr, "unknown mode %s (pipe_thread, mutex_thread, mutex_process, "
                                "plain_thread, pipe_message)\n", mode);
                return 2;
            }
            if (r >= 0)
                samples[r] = s;
        }
    }
    char extra[64];
    snprintf(extra, sizeof extra, "\"cpu_a\": %d, \"cpu_b\": %d, ", cpu_a, cpu_b);
    print_result(mode, extra, batch, samples, rounds);
    free(samples);
    return 0;
}
