/* Reference loop in C for mmreplay's allocation program (benchmarks/alloc_replay_speed.py builds
 * and runs it): the same calls as replay/alloc_engine.py's run_allocations, in the same order,
 * each timed with rdtsc into a latency array, the memory written as --touch says (none, first
 * byte, one byte per page the block covers, every byte), realloc touching only what it added,
 * valloc/pvalloc through memalign when asked.
 *
 * Built with -DALLOC_C_LIBRARY -shared -fPIC it is a library whose alloc_c_loop() the replay
 * child (replay/alloc_child.py, job "loop": "c") calls in place of the numba loop: the two loops
 * then run in processes with the same history (Python, numba, the program loaded), so that the
 * allocator starts from the same state. Built as a program it runs a program file on its own:
 *
 * Usage: alloc_c_replayer PROGRAM.bin TOUCH SUBSTITUTE
 *   PROGRAM.bin: char magic[8] = "MMRALOC1"; int64 n_ops, n_slots; int8 code[n_ops];
 *   int32 slot[n_ops]; int32 ref[n_ops]; int64 size[n_ops]; int64 arg[n_ops] (native order)
 * Prints: calls=N loop_ns=N calls_per_s=X failed=N
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

/* Must match replay/alloc_program.py and replay/alloc_engine.py. */
enum { A_MALLOC, A_CALLOC, A_REALLOC, A_FREE, A_POSIX_MEMALIGN, A_ALIGNED_ALLOC, A_MEMALIGN,
       A_VALLOC, A_PVALLOC };
enum { TOUCH_NONE, TOUCH_FIRST, TOUCH_PAGES, TOUCH_FULL };
enum { SUBSTITUTE_VALLOC = 1, SUBSTITUTE_PVALLOC = 2, PAGE = 4096 };

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

__attribute__((unused)) static void *read_array(FILE *f, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p || fread(p, size, n, f) != n) {
        fprintf(stderr, "alloc_c_replayer: short program file\n");
        exit(2);
    }
    return p;
}

static int64_t touch_block(uintptr_t p, int64_t n, int touch) {
    volatile unsigned char *b = (unsigned char *)p;
    if (n <= 0 || touch == TOUCH_NONE) return 0;
    if (touch == TOUCH_FIRST) { b[0] = 1; return 1; }
    if (touch == TOUCH_PAGES) {
        int64_t written = 1;
        b[0] = 1;
        for (int64_t off = (int64_t)(((p | (PAGE - 1)) + 1) - p); off < n; off += PAGE) {
            b[off] = 1;
            written++;
        }
        return written;
    }
    for (int64_t i = 0; i < n; i++) b[i] = 1;
    return n;
}

/* Ops [start, stop); returns the loop's CLOCK_MONOTONIC ns, adds its rdtsc ticks to *ticks,
 * the bytes --touch wrote to *touched and the failed allocations to *n_failed. */
int64_t alloc_c_loop(const int8_t *code, const int32_t *slot, const int32_t *ref,
                     const int64_t *size, const int64_t *arg, int64_t start, int64_t stop,
                     uintptr_t *base, int64_t *latency, int8_t *failed, int64_t touch,
                     int64_t substitute, int64_t *ticks, int64_t *touched, int64_t *n_failed) {
    void *scratch;
    int64_t skipped = 0;
    int64_t t_start = now_ns();
    uint64_t tick_start = __rdtsc();
    for (int64_t i = start; i < stop; i++) {
        int c = code[i];
        int64_t n = size[i];
        uint64_t t0, t1;
        uintptr_t p;
        int64_t grown_from = 0;
        if (c == A_FREE) {
            int32_t r = ref[i];
            p = 0;
            if (r >= 0) {
                p = base[r];
                if (!p) { skipped++; failed[i] = 2; continue; }
                base[r] = 0;
            }
            t0 = __rdtsc();
            free((void *)p);
            latency[i] = (int64_t)(__rdtsc() - t0);
            continue;
        }
        switch (c) {
        case A_MALLOC: t0 = __rdtsc(); p = (uintptr_t)malloc(n); t1 = __rdtsc(); break;
        case A_CALLOC: t0 = __rdtsc(); p = (uintptr_t)calloc(1, n); t1 = __rdtsc(); break;
        case A_REALLOC: {
            int32_t r = ref[i];
            uintptr_t old = r >= 0 ? base[r] : 0;
            t0 = __rdtsc();
            p = (uintptr_t)realloc((void *)old, n);
            t1 = __rdtsc();
            if (r >= 0 && !(p == 0 && n > 0)) {
                base[r] = 0;
                if (old) grown_from = arg[i];
            }
            break;
        }
        case A_POSIX_MEMALIGN:
            t0 = __rdtsc();
            p = posix_memalign(&scratch, arg[i], n) == 0 ? (uintptr_t)scratch : 0;
            t1 = __rdtsc();
            break;
        case A_ALIGNED_ALLOC: t0 = __rdtsc(); p = (uintptr_t)aligned_alloc(arg[i], n); t1 = __rdtsc(); break;
        case A_MEMALIGN: t0 = __rdtsc(); p = (uintptr_t)memalign(arg[i], n); t1 = __rdtsc(); break;
        case A_VALLOC:
            t0 = __rdtsc();
            p = (uintptr_t)((substitute & SUBSTITUTE_VALLOC) ? memalign(PAGE, n) : valloc(n));
            t1 = __rdtsc();
            break;
        default:
            t0 = __rdtsc();
            p = (uintptr_t)((substitute & SUBSTITUTE_PVALLOC)
                                ? memalign(PAGE, n > 0 ? (n + PAGE - 1) / PAGE * PAGE : PAGE)
                                : pvalloc(n));
            t1 = __rdtsc();
            break;
        }
        latency[i] = (int64_t)(t1 - t0);
        base[slot[i]] = p;
        if (!p) {
            if (n > 0) { failed[i] = 1; (*n_failed)++; }
            continue;
        }
        if (n > grown_from && touch != TOUCH_NONE) *touched += touch_block(p + grown_from, n - grown_from, touch);
    }
    *ticks += (int64_t)(__rdtsc() - tick_start);
    (void)skipped;
    return now_ns() - t_start;
}

#ifndef ALLOC_C_LIBRARY
int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: alloc_c_replayer PROGRAM.bin TOUCH SUBSTITUTE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    char magic[8];
    int64_t n_ops, n_slots;
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "MMRALOC1", 8) ||
        fread(&n_ops, 8, 1, f) != 1 || fread(&n_slots, 8, 1, f) != 1) {
        fprintf(stderr, "alloc_c_replayer: not a program file\n");
        return 2;
    }
    int touch = atoi(argv[2]), substitute = atoi(argv[3]);
    int8_t *code = read_array(f, n_ops, 1);
    int32_t *slot = read_array(f, n_ops, 4);
    int32_t *ref = read_array(f, n_ops, 4);
    int64_t *size = read_array(f, n_ops, 8);
    int64_t *arg = read_array(f, n_ops, 8);
    fclose(f);
    uintptr_t *base = calloc(n_slots ? n_slots : 1, sizeof *base);
    int64_t *latency = calloc(n_ops ? n_ops : 1, sizeof *latency);
    int8_t *failed = calloc(n_ops ? n_ops : 1, 1);
    /* as the engine does: its arrays written before the loop, no fault inside it */
    memset(base, 1, n_slots * sizeof *base); memset(base, 0, n_slots * sizeof *base);
    memset(latency, 1, n_ops * sizeof *latency); memset(latency, 0, n_ops * sizeof *latency);
    memset(failed, 1, n_ops); memset(failed, 0, n_ops);
    int64_t touched = 0, n_failed = 0, ticks = 0;
    int64_t loop_ns = alloc_c_loop(code, slot, ref, size, arg, 0, n_ops, base, latency, failed,
                                   touch, substitute, &ticks, &touched, &n_failed);
    printf("calls=%lld loop_ns=%lld calls_per_s=%.1f failed=%lld touched=%lld\n",
           (long long)n_ops, (long long)loop_ns, n_ops / (loop_ns / 1e9), (long long)n_failed,
           (long long)touched);
    return 0;
}
#endif
