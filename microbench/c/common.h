/* Shared helpers for echobench's C reference programs: the floor under the Python figures.
 *
 * Each program times batches of one operation with CLOCK_MONOTONIC, divides by the batch size
 * (so the clock's own cost does not dominate a microsecond operation), repeats that for several
 * rounds and prints one JSON object: the per-operation samples in microseconds and their
 * median, min and max. The Python runner (microbench/runner.py) collects these objects.
 */
#ifndef ECHOBENCH_COMMON_H
#define ECHOBENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

static inline void pin_to(int cpu) {
    cpu_set_t set;
    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        die("sched_setaffinity");
}

static inline long parse_count(const char *s, const char *name, long min) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min) {
        fprintf(stderr, "bad %s: %s (want an integer >= %ld)\n", name, s, min);
        exit(2);
    }
    return v;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Print {"op": ..., "batch": ..., "rounds": ..., "samples_us": [...], "median_us": ...}. */
static inline void print_result(const char *op, const char *extra_json, long batch,
                                const double *samples_us, long rounds) {
    double *sorted = malloc(sizeof(double) * (size_t)rounds);
    if (!sorted)
        die("malloc");
    memcpy(sorted, samples_us, sizeof(double) * (size_t)rounds);
    qsort(sorted, (size_t)rounds, sizeof(double), cmp_double);
    double median = rounds % 2 ? sorted[rounds / 2]
                               : (sorted[rounds / 2 - 1] + sorted[rounds / 2]) / 2.0;
    printf("{\"op\": \"%s\", %s\"batch\": %ld, \"rounds\": %ld, \"samples_us\": [", op,
           extra_json, batch, rounds);
    for (long i = 0; i < rounds; i++)
        printf("%s%.4f", i ? ", " : "", samples_us[i]);
    printf("], \"median_us\": %.4f, \"min_us\": %.4f, \"max_us\": %.4f}\n", median, sorted[0],
           sorted[rounds - 1]);
    free(sorted);
}

#endif
