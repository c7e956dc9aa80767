/* Reference replayer in C for mmreplay's op program (benchmarks/engine_speed.py builds and runs it).
 *
 * It executes the same op program as the numba engine (replay/engine.py: run_ops), with the same
 * semantics for what the benchmark needs: OP_MMAP with kernel placement, OP_MMAP_FIXED_IN,
 * OP_MUNMAP, OP_MREMAP, OP_MADVISE, OP_MPROTECT, OP_TOUCH; --thp advice; touch
 * none/first/pages/full. Every
 * call is timed with clock_gettime(CLOCK_MONOTONIC) into a latency array and its errno recorded,
 * as the engine does, so the two loops do the same work and their speeds can be compared.
 *
 * Usage: c_replayer PROGRAM.bin OUT_DIR [STOP_OP]
 *   PROGRAM.bin  written by engine_speed.dump_program (layout below, native byte order)
 *   OUT_DIR      receives result.bin (loop ns, counters, latency, err, base, id_state) and, when
 *                STOP_OP is given, maps.txt: /proc/self/maps right after op STOP_OP - 1, before
 *                anything is released (the smoke test checks the live set there)
 * Prints one line: events=N ops=N loop_ns=N events_per_s=X (stopped_at_op=N loop_ns=N with STOP_OP)
 *
 * Built with -DC_REPLAYER_LIBRARY -shared -fPIC, the same loop becomes c_replayer_main(argc, argv)
 * in a shared library that prints nothing: the benchmark runs it inside its own process, to compare
 * the loops in the same address-space environment.
 *
 * PROGRAM.bin: char magic[8] = "MMRPROG1"; int64 n_ops, n_ids, events, touch, thp_advice;
 *   int8 code[n_ops], int8 mode[n_ops], int32 map_id[n_ops], int32 ref_id[n_ops],
 *   int64 offset[n_ops], int64 length[n_ops], int64 arg[n_ops], int32 prot[n_ops],
 *   int32 flags[n_ops], int64 id_length[n_ids]
 * result.bin: int64 loop_ns, int64 counters[N_COUNTERS], int64 latency[n_ops],
 *   int32 err[n_ops], int64 base[n_ids], int8 id_state[n_ids]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Must match replay/program.py and replay/engine.py. */
enum { OP_MMAP = 0, OP_MMAP_FIXED_IN = 1, OP_MUNMAP = 2, OP_MREMAP = 3, OP_MADVISE = 4,
       OP_MPROTECT = 5, OP_TOUCH = 6 };
enum { PLACE_MASK = 0x03, TOUCH_WRITE = 0x04, TOUCH_READ = 0x08, THP_ADVISE = 0x20 };
enum { ID_MAPPED = 0x01, ID_TAINTED = 0x02 };
enum { TOUCH_NONE = 0, TOUCH_FIRST = 1, TOUCH_PAGES = 2, TOUCH_FULL = 3 };
enum { MADV_GUARD_INSTALL_ = 102, MREMAP_DONTUNMAP_ = 4, PAGE = 4096 };
enum { K_LIVE_BYTES, K_TOUCH_BYTES, K_TOUCH_NS, K_CHECKSUM, K_RUNTIME_SKIPPED,
       K_THP_ADVICE_FAILED, N_COUNTERS };

static int64_t counters[N_COUNTERS];
static char maps_buffer[1 << 22];  /* static, so copying /proc/self/maps maps nothing new */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "c_replayer: %s\n", what);
    exit(2);
}

static void *read_array(FILE *f, int64_t count, size_t item) {
    void *p = malloc(count > 0 ? (size_t)count * item : 1);
    if (!p) die("out of memory");
    if (count > 0 && fread(p, item, (size_t)count, f) != (size_t)count) die("program file too short");
    return p;
}

static void write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) die("cannot write output");
        p += w;
        n -= (size_t)w;
    }
}

/* Fault in new memory: first byte, one byte per page or every byte (engine: _touch). */
static void touch_memory(char *p, int64_t length, int write, int64_t touch) {
    if (touch == TOUCH_NONE || length == 0) return;
    int64_t t0 = now_ns(), touched, sum = 0;
    char *v = p;  /* not volatile: munmap later receives p, so no store can be dropped */
    if (touch == TOUCH_FIRST) {
        if (write) v[0] = 1; else sum += (unsigned char)v[0];
        touched = PAGE;
    } else if (touch == TOUCH_PAGES) {
        for (int64_t i = 0; i < length; i += PAGE) {
            if (write) v[i] = 1; else sum += (unsigned char)v[i];
        }
        touched = (length + PAGE - 1) / PAGE * PAGE;
    } else {
        if (write) {
            for (int64_t i = 0; i < length; i++) v[i] = 1;
        } else {
            const int64_t *q = (const int64_t *)p;
            for (int64_t i = 0; i < length / 8; i++) sum += q[i];
        }
        touched = length;
    }
    counters[K_CHECKSUM] += sum;
    counters[K_TOUCH_BYTES] += touched;
    counters[K_TOUCH_NS] += now_ns() - t0;
}

#ifdef C_REPLAYER_LIBRARY
#define main c_replayer_main
#endif

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) die("usage: c_replayer PROGRAM.bin OUT_DIR [STOP_OP]");
    memset(counters, 0, sizeof counters);  /* called repeatedly when built as a library */
    FILE *f = fopen(argv[1], "rb");
    if (!f) die("cannot open program file");
    char magic[8];
    int64_t header[5];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "MMRPROG1", 8) != 0) die("not a program file");
    if (fread(header, sizeof header[0], 5, f) != 5) die("program header too short");
    int64_t n_ops = header[0], n_ids = header[1], events = header[2];
    int64_t touch = header[3], thp_advice = header[4];
    if (n_ops < 0 || n_ids < 0 || touch < TOUCH_NONE || touch > TOUCH_FULL) die("bad header");
    int8_t *code = read_array(f, n_ops, 1), *mode = read_array(f, n_ops, 1);
    int32_t *map_id = read_array(f, n_ops, 4), *ref_id = read_array(f, n_ops, 4);
    int64_t *offset = read_array(f, n_ops, 8), *length = read_array(f, n_ops, 8);
    int64_t *arg = read_array(f, n_ops, 8);
    int32_t *prot = read_array(f, n_ops, 4), *flags = read_array(f, n_ops, 4);
    int64_t *id_length = read_array(f, n_ids, 8);
    fclose(f);
    (void)id_length;
    (void)events;  /* only printed by the program build */
    int64_t stop = argc == 4 ? atoll(argv[3]) : n_ops;
    if (stop < 0 || stop > n_ops) die("STOP_OP out of range");
    for (int64_t i = 0; i < n_ops; i++) {
        if (code[i] < OP_MMAP || code[i] > OP_TOUCH) die("unknown op code");
        if (map_id[i] < 0 || map_id[i] >= n_ids) die("map_id out of range");
        if ((code[i] == OP_MMAP_FIXED_IN || code[i] == OP_MREMAP) && (ref_id[i] < 0 || ref_id[i] >= n_ids))
            die("ref_id out of range");
        if (code[i] == OP_MMAP && (mode[i] & PLACE_MASK) != 0)
            die("only kernel placement is implemented (policy 'kernel')");
    }
    int64_t *latency = calloc((size_t)n_ops + 1, 8), *base = calloc((size_t)n_ids + 1, 8);
    int32_t *err = calloc((size_t)n_ops + 1, 4);
    int8_t *id_state = calloc((size_t)n_ids + 1, 1);
    if (!latency || !base || !err || !id_state) die("out of memory");

    int64_t loop_t0 = now_ns();
    for (int64_t i = 0; i < stop; i++) {
        int c = code[i], m = map_id[i], md = mode[i];
        int64_t t0;
        if (c == OP_MMAP || c == OP_MMAP_FIXED_IN) {
            int64_t size = length[i];
            char *p;
            if (c == OP_MMAP_FIXED_IN) {
                int parent = ref_id[i];
                if ((id_state[parent] & (ID_MAPPED | ID_TAINTED)) != ID_MAPPED) {
                    err[i] = -1;
                    counters[K_RUNTIME_SKIPPED]++;
                    continue;
                }
                t0 = now_ns();
                p = mmap((char *)base[parent] + offset[i], (size_t)size, prot[i],
                         flags[i] | MAP_FIXED, -1, 0);
                latency[i] = now_ns() - t0;
                if (p == MAP_FAILED) {
                    err[i] = errno;
                    id_state[parent] |= ID_TAINTED;  /* a failed MAP_FIXED may have unmapped it */
                }
            } else {
                t0 = now_ns();
                p = mmap((void *)arg[i], (size_t)size, prot[i], flags[i], -1, 0);
                latency[i] = now_ns() - t0;
                if (p == MAP_FAILED) err[i] = errno;
            }
            if (p == MAP_FAILED) {
                base[m] = 0;
                continue;
            }
            base[m] = (int64_t)p;
            id_state[m] = ID_MAPPED;
            if (c == OP_MMAP) counters[K_LIVE_BYTES] += size;
            if ((md & THP_ADVISE) && thp_advice >= 0 && madvise(p, (size_t)size, (int)thp_advice) != 0)
                counters[K_THP_ADVICE_FAILED]++;
            if (md & (TOUCH_WRITE | TOUCH_READ)) touch_memory(p, size, (md & TOUCH_WRITE) != 0, touch);
            continue;
        }
        if (c == OP_TOUCH) {  /* the workload's first use: no call, nothing to skip */
            if ((id_state[m] & (ID_MAPPED | ID_TAINTED)) == ID_MAPPED)
                touch_memory((char *)base[m] + offset[i], length[i], (md & TOUCH_WRITE) != 0, touch);
            continue;
        }
        /* Every other op works on a piece of mapping m, which must exist in this replay. */
        if (!(id_state[m] & ID_MAPPED)) {
            err[i] = -1;
            counters[K_RUNTIME_SKIPPED]++;
            continue;
        }
        char *address = (char *)base[m] + offset[i];
        int64_t size = length[i];
        int intact = !(id_state[m] & ID_TAINTED);
        if (c == OP_MUNMAP) {
            t0 = now_ns();
            int r = munmap(address, (size_t)size);
            latency[i] = now_ns() - t0;
            if (r != 0) {
                err[i] = errno;
                id_state[m] |= ID_TAINTED;
            } else {
                counters[K_LIVE_BYTES] -= size;
            }
        } else if (c == OP_MREMAP) {
            int64_t new_size = arg[i];
            int new_id = ref_id[i];
            int dont_unmap = (flags[i] & MREMAP_DONTUNMAP_) != 0;
            t0 = now_ns();
            char *p = mremap(address, (size_t)size, (size_t)new_size, flags[i], NULL);
            latency[i] = now_ns() - t0;
            if (p == MAP_FAILED) {
                err[i] = errno;
                base[new_id] = 0;
                /* Keep the live set equal to the trace's: the old piece is gone there. */
                if (!dont_unmap) {
                    munmap(address, (size_t)size);
                    counters[K_LIVE_BYTES] -= size;
                }
                continue;
            }
            base[new_id] = (int64_t)p;
            id_state[new_id] = ID_MAPPED | (id_state[m] & ID_TAINTED);
            counters[K_LIVE_BYTES] += new_size - (dont_unmap ? 0 : size);
            if (new_size > size && (md & (TOUCH_WRITE | TOUCH_READ)) && intact)
                touch_memory(p + size, new_size - size, (md & TOUCH_WRITE) != 0, touch);
        } else if (c == OP_MADVISE) {
            t0 = now_ns();
            int r = madvise(address, (size_t)size, (int)arg[i]);
            latency[i] = now_ns() - t0;
            if (r != 0) err[i] = errno;
            else if (arg[i] == MADV_GUARD_INSTALL_) id_state[m] |= ID_TAINTED;  /* guard pages fault */
        } else {  /* OP_MPROTECT */
            t0 = now_ns();
            int r = mprotect(address, (size_t)size, prot[i]);
            latency[i] = now_ns() - t0;
            if (r != 0) {
                err[i] = errno;
                id_state[m] |= ID_TAINTED;
            } else if ((md & (TOUCH_WRITE | TOUCH_READ)) && intact) {
                touch_memory(address, size, (md & TOUCH_WRITE) != 0, touch);
            }
        }
    }
    int64_t loop_ns = now_ns() - loop_t0;

    char path[4096];
    if (argc == 4) {
        /* Copy /proc/self/maps with plain syscalls into static memory: no allocation may land
         * in the address ranges the replay just released. */
        int in = open("/proc/self/maps", O_RDONLY);
        if (in < 0) die("cannot open /proc/self/maps");
        size_t used = 0;
        ssize_t got;
        while ((got = read(in, maps_buffer + used, sizeof maps_buffer - used)) > 0) used += (size_t)got;
        close(in);
        if (used == sizeof maps_buffer) die("/proc/self/maps too large");
        snprintf(path, sizeof path, "%s/maps.txt", argv[2]);
        int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0) die("cannot create maps.txt");
        write_all(out, maps_buffer, used);
        close(out);
    }
    snprintf(path, sizeof path, "%s/result.bin", argv[2]);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) die("cannot create result.bin");
    write_all(out, &loop_ns, 8);
    write_all(out, counters, sizeof counters);
    write_all(out, latency, (size_t)n_ops * 8);
    write_all(out, err, (size_t)n_ops * 4);
    write_all(out, base, (size_t)n_ids * 8);
    write_all(out, id_state, (size_t)n_ids);
    close(out);
    free(code), free(mode), free(map_id), free(ref_id), free(offset), free(length), free(arg);
    free(prot), free(flags), free(id_length), free(latency), free(base), free(err), free(id_state);
#ifndef C_REPLAYER_LIBRARY
    if (stop == n_ops)
        printf("events=%lld ops=%lld loop_ns=%lld events_per_s=%.1f\n", (long long)events,
               (long long)stop, (long long)loop_ns, loop_ns > 0 ? events * 1e9 / loop_ns : 0.0);
    else
        printf("stopped_at_op=%lld loop_ns=%lld\n", (long long)stop, (long long)loop_ns);
#endif
    return 0;
}
