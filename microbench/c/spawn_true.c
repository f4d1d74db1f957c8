/* posix_spawn of /bin/true + waitpid: creating a process that runs a new program, in C.
 *
 * usage: spawn_true ROUNDS BATCH CPU
 * This is the whole cost inetd-style servers pay per connection (fork/exec, CS:APP 8.4):
 * creation, exec of a tiny dynamically linked program, its run and exit, and the reap.
 */
#include "common.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s ROUNDS BATCH CPU\n", argv[0]);
        return 2;
    }
    long rounds = parse_count(argv[1], "ROUNDS", 1);
    long batch = parse_count(argv[2], "BATCH", 1);
    int cpu = (int)parse_count(argv[3], "CPU", -1);
    pin_to(cpu);

    char *child_argv[] = {"true", NULL};
    double *samples = malloc(sizeof(double) * (size_t)rounds);
    if (!samples)
        die("malloc");
    for (long r = -1; r < rounds; r++) {
        long long t0 = now_ns();
        for (long i = 0; i < batch; i++) {
            pid_t pid;
            int err = posix_spawn(&pid, "/bin/true", NULL, NULL, child_argv, environ);
            if (err != 0) {
                errno = err;
                die("posix_spawn /bin/true");
            }
            int status;
            if (waitpid(pid, &status, 0) < 0)
                die("waitpid");
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "/bin/true did not exit 0\n");
                return 1;
            }
        }
        long long t1 = now_ns();
        if (r >= 0)
            samples[r] = (double)(t1 - t0) / 1000.0 / (double)batch;
    }
    char extra[32];
    snprintf(extra, sizeof extra, "\"cpu\": %d, ", cpu);
    print_result("posix_spawn", extra, batch, samples, rounds);
    free(samples);
    return 0;
}
