/* 1-byte round trip between two processes over a pair of pipes: the IPC floor, in C.
 *
 * usage: pipe_rtt ROUNDS BATCH PARENT_CPU CHILD_CPU
 * The parent writes one byte, the child reads it and writes it back. With both processes on
 * one CPU a round trip is two context switches; on different CPUs each hop must wake the other
 * CPU, which on a VM costs far more (several times, measured on these VMs). The placement is
 * therefore an argument, never left to the scheduler.
 */
#include "common.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void echo_child(int in_fd, int out_fd, int cpu) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent, even if it is killed */
    pin_to(cpu);
    char c;
    for (;;) {
        ssize_t n = read(in_fd, &c, 1);
        if (n <= 0) /* EOF: the parent is done */
            _exit(n == 0 ? 0 : 1);
        if (write(out_fd, &c, 1) != 1)
            _exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ROUNDS BATCH PARENT_CPU CHILD_CPU\n", argv[0]);
        return 2;
    }
    long rounds = parse_count(argv[1], "ROUNDS", 1);
    long batch = parse_count(argv[2], "BATCH", 1);
    int parent_cpu = (int)parse_count(argv[3], "PARENT_CPU", 0);
    int child_cpu = (int)parse_count(argv[4], "CHILD_CPU", 0);

    int to_child[2], to_parent[2];
    if (pipe(to_child) < 0 || pipe(to_parent) < 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        echo_child(to_child[0], to_parent[1], child_cpu);
    }
    close(to_child[0]);
    close(to_parent[1]);
    pin_to(parent_cpu);

    double *samples = malloc(sizeof(double) * (size_t)rounds);
    if (!samples)
        die("malloc");
    char c = 'x';
    for (long r = -1; r < rounds; r++) {
        long long t0 = now_ns();
        for (long i = 0; i < batch; i++) {
            if (write(to_child[1], &c, 1) != 1 || read(to_parent[0], &c, 1) != 1)
                die("round trip");
        }
        long long t1 = now_ns();
        if (r >= 0)
            samples[r] = (double)(t1 - t0) / 1000.0 / (double)batch;
    }
    close(to_child[1]); /* EOF tells the child to exit */
    close(to_parent[0]);
    if (waitpid(pid, NULL, 0) < 0)
        die("waitpid");
    char extra[64];
    snprintf(extra, sizeof extra, "\"parent_cpu\": %d, \"child_cpu\": %d, ", parent_cpu,
             child_cpu);
    print_result("pipe_rtt", extra, batch, samples, rounds);
    free(samples);
    return 0;
}
