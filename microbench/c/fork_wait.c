/* fork + _exit + waitpid, the process control of CS:APP 8.4 and Fig. 12.5, timed in C.
 *
 * usage: fork_wait HEAP_MB ROUNDS BATCH CPU
 * The parent first writes every page of a HEAP_MB MiB heap: fork must then copy page tables
 * for that much resident memory, which is how a parent's size shows up in its fork cost.
 * CPU < 0 leaves the process unpinned.
 */
#include "common.h"

#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HEAP_MB ROUNDS BATCH CPU\n", argv[0]);
        return 2;
    }
    long heap_mb = parse_count(argv[1], "HEAP_MB", 0);
    long rounds = parse_count(argv[2], "ROUNDS", 1);
    long batch = parse_count(argv[3], "BATCH", 1);
    int cpu = (int)parse_count(argv[4], "CPU", -1);
    pin_to(cpu);

    size_t heap_bytes = (size_t)heap_mb << 20;
    volatile char *heap = NULL;
    if (heap_bytes) {
        heap = malloc(heap_bytes);
        if (!heap)
            die("malloc");
        long page = sysconf(_SC_PAGESIZE);
        for (size_t off = 0; off < heap_bytes; off += (size_t)page)
            heap[off] = 1; /* resident and private, like a Python heap that was used */
    }

    double *samples = malloc(sizeof(double) * (size_t)rounds);
    if (!samples)
        die("malloc");
    for (long r = -1; r < rounds; r++) { /* round -1 is a warm-up, not recorded */
        long long t0 = now_ns();
        for (long i = 0; i < batch; i++) {
            pid_t pid = fork();
            if (pid < 0)
                die("fork");
            if (pid == 0)
                _exit(0);
            if (waitpid(pid, NULL, 0) < 0)
                die("waitpid");
        }
        long long t1 = now_ns();
        if (r >= 0)
            samples[r] = (double)(t1 - t0) / 1000.0 / (double)batch;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "\"heap_mb\": %ld, \"cpu\": %d, ", heap_mb, cpu);
    print_result("fork_wait", extra, batch, samples, rounds);
    free(samples);
    return 0;
}
