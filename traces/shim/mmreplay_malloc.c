/* mmreplay's allocation recorder: an LD_PRELOAD library that records every call of the malloc
 * family (malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc) with its arguments, its result, the calling thread and a timestamp.
 *
 * It records only when MMREPLAY_MALLOC_DIR names a directory; it then writes one file per
 * process image, DIR/<pid>-<n>.mmalloc (n counts the images a pid execs: 0, 1, ...). The layout
 * of the files is described in traces/malloc_record.py, which reads them.
 *
 * Hot path: one timestamp (rdtsc when the kernel's clocksource is the TSC, else
 * CLOCK_MONOTONIC), one compare-and-swap on a word only this thread and an exiting process touch,
 * and a 40-byte store into a per-thread buffer. No lock, no formatting, no allocation. A full
 * buffer is written with one write(2).
 *
 * Nothing is lost when
 * - a thread exits: a pthread key destructor writes its buffer (and runs again for the frees
 *   other destructors make after it); what is recorded later still is written by the next thread
 *   that takes the buffer over, or at process exit;
 * - the process exits: exit() (a destructor and an atexit handler), _exit(), _Exit() and the
 *   exec family write every thread's buffer first; calls made after that are written one by one;
 * - the process forks: the child starts a file of its own and drops the parent's unwritten
 *   records (the parent writes them); exec'd images load this library again (LD_PRELOAD is
 *   inherited) and record into a file of their own.
 * Calls made while this thread is inside the recorder (a signal handler allocating during a
 * record, the dynamic linker resolving our own symbols) are passed on unrecorded and counted.
 * A process killed by a signal loses what its threads had not written yet.
 *
 * The buffers are anonymous mmaps of BUFFER_BYTES; each is announced by an OWN_MAP record so
 * that the reader can drop those mmaps from the syscall-level trace recorded next to it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TLS __thread __attribute__((tls_model("initial-exec")))

/* File format (little-endian; see traces/malloc_record.py). */
#define FILE_MAGIC "MMRMALC1"
#define FORMAT_VERSION 1
#define HEADER_BYTES 512
#define BLOCK_MAGIC 0x314B4C42u /* "BLK1" */
#define BUFFER_BYTES (1u << 20)

enum op {
    OP_MALLOC = 1, OP_FREE = 2, OP_CALLOC = 3, OP_REALLOC = 4, OP_POSIX_MEMALIGN = 5,
    OP_ALIGNED_ALLOC = 6, OP_MEMALIGN = 7, OP_VALLOC = 8, OP_PVALLOC = 9, OP_REALLOCARRAY = 10,
    OP_OWN_MAP = 64, /* a buffer of this recorder: size = length, ptr = address */
};
enum block_flags { BLOCK_THREAD_EXIT = 1, BLOCK_PROCESS_EXIT = 2, BLOCK_LATE = 4 };
enum clock_kind { CLOCK_KIND_TSC = 0, CLOCK_KIND_MONOTONIC = 1 };

struct record {            /* 40 bytes */
    uint64_t t;            /* clock ticks: after the call for allocations, before it for free */
    uint64_t size;         /* bytes requested (calloc, reallocarray: the product; UINT64_MAX on overflow) */
    uint64_t ptr;          /* pointer returned (0 if none), or the pointer freed */
    uint64_t aux;          /* realloc/reallocarray: the old pointer; memalign family: alignment */
    uint8_t op;
    uint8_t err;           /* errno of a failed call (posix_memalign: its return value) */
    uint8_t pad[6];
};

struct block {             /* 40 bytes, before the records of every write */
    uint32_t magic;
    uint32_t tid;
    uint32_t count;
    uint32_t flags;
    uint64_t t;            /* clock ticks when written ... */
    uint64_t mono_ns;      /* ... and CLOCK_MONOTONIC then: calibrates the ticks */
    uint64_t nested;       /* calls of this thread passed on unrecorded so far */
};

struct header {            /* HEADER_BYTES */
    char magic[8];
    uint32_t version, header_bytes, record_bytes, block_bytes;
    uint32_t pid, ppid, clock, buffer_bytes;
    uint64_t t0, mono0_ns, real0_ns;
    char exe[256];
    char pad[HEADER_BYTES - 8 - 32 - 24 - 256];
};

_Static_assert(sizeof(struct record) == 40, "record size");
_Static_assert(sizeof(struct block) == 40, "block size");
_Static_assert(sizeof(struct header) == HEADER_BYTES, "header size");

/* A thread's buffer; lives at the start of its own mapping, followed by the block header and
 * the records, so that one write(2) sends block and records. */
struct tbuf {
    _Atomic int state;     /* IDLE, APPENDING (owner only), TAKEN (a flusher) */
    int exited;            /* the owner's key destructor ran */
    _Atomic int tid;       /* the owner's kernel thread id (0: none) */
    int rounds;            /* key destructor calls */
    uint64_t nested;
    struct tbuf *next;     /* registry */
    uint32_t count, cap;
    struct block *block;
    struct record *recs;
};
enum { IDLE = 0, APPENDING = 1, TAKEN = 2 };

/* ------------------------------------------------------------------------------------------ */
/* Real functions and the bootstrap allocator for dlsym's own allocations. */

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void *(*real_reallocarray)(void *, size_t, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);
static void (*real__exit)(int) __attribute__((noreturn));
static void (*real__Exit)(int) __attribute__((noreturn));
static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);

static _Atomic int resolve_state; /* 0 not yet, 1 resolving, 2 done */
static TLS int in_shim;            /* > 0 while this thread runs recorder code */
static TLS struct tbuf *my_buf;
static TLS int my_tid;
static TLS uint64_t my_nested;     /* unrecorded calls before this thread had a buffer */

#define BOOT_BYTES (256 * 1024)
static _Alignas(64) unsigned char boot_heap[BOOT_BYTES];
static _Atomic size_t boot_used;

static int is_boot(const void *p) {
    return (const unsigned char *)p >= boot_heap && (const unsigned char *)p < boot_heap + BOOT_BYTES;
}

static void *boot_alloc(size_t size, size_t align) {
    if (align < 16) align = 16;
    size_t need = size + align + 16;
    size_t at = atomic_fetch_add(&boot_used, need);
    if (at + need > BOOT_BYTES) return NULL;
    uintptr_t p = ((uintptr_t)boot_heap + at + 16 + align - 1) & ~(uintptr_t)(align - 1);
    ((size_t *)p)[-1] = size;
    return (void *)p;
}

static size_t boot_size(const void *p) { return ((const size_t *)p)[-1]; }

/* The next definition, as the program's own references would find it. dlsym finds the default
 * version (libc's malloc@@GLIBC_2.2.5) or an unversioned one (jemalloc, mimalloc, tcmalloc
 * preloaded after this library); a definition under a non-default version
 * (libc_malloc_debug.so's malloc@GLIBC_2.2.5) only dlvsym finds, by the version the program
 * asks for (x86-64 values). When they differ, the one that is not libc's own is the next. */
static void *next_symbol(const char *name, const char *version) {
    void *plain = dlsym(RTLD_NEXT, name);
#if defined(__x86_64__) && defined(__GLIBC__)
    void *versioned = dlvsym(RTLD_NEXT, name, version);
    if (versioned && versioned != plain) {
        Dl_info libc, found;
        if (!plain) return versioned;
        if (dladdr((void *)getpid, &libc) && dladdr(plain, &found) &&
            found.dli_fbase == libc.dli_fbase)
            return versioned;
    }
#else
    (void)version;
#endif
    return plain;
}

static void resolve(void) {
    int expected = 0;
    if (atomic_load_explicit(&resolve_state, memory_order_acquire) == 2) return;
    if (atomic_compare_exchange_strong(&resolve_state, &expected, 1)) {
        in_shim++;
        real_malloc = next_symbol("malloc", "GLIBC_2.2.5");
        real_free = next_symbol("free", "GLIBC_2.2.5");
        real_calloc = next_symbol("calloc", "GLIBC_2.2.5");
        real_realloc = next_symbol("realloc", "GLIBC_2.2.5");
        real_reallocarray = next_symbol("reallocarray", "GLIBC_2.26");
        real_posix_memalign = next_symbol("posix_memalign", "GLIBC_2.2.5");
        real_aligned_alloc = next_symbol("aligned_alloc", "GLIBC_2.16");
        real_memalign = next_symbol("memalign", "GLIBC_2.2.5");
        real_valloc = next_symbol("valloc", "GLIBC_2.2.5");
        real_pvalloc = next_symbol("pvalloc", "GLIBC_2.2.5");
        real__exit = next_symbol("_exit", "GLIBC_2.2.5");
        real__Exit = next_symbol("_Exit", "GLIBC_2.2.5");
        real_execve = next_symbol("execve", "GLIBC_2.2.5");
        real_execvpe = next_symbol("execvpe", "GLIBC_2.11");
        real_fexecve = next_symbol("fexecve", "GLIBC_2.2.5");
        in_shim--;
        atomic_store_explicit(&resolve_state, 2, memory_order_release);
        return;
    }
    /* Another thread resolves; this one waits, unless it is the resolver itself (dlsym
     * allocating), which then uses the bootstrap heap. */
    while (atomic_load_explicit(&resolve_state, memory_order_acquire) != 2) {
        if (in_shim) return;
        sched_yield();
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Clock */

static int use_tsc;

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ticks(void) {
#if HAVE_TSC
    if (LIKELY(use_tsc)) return __rdtsc();
#endif
    return clock_ns(CLOCK_MONOTONIC);
}

/* ------------------------------------------------------------------------------------------ */
/* Configuration and output */

static _Atomic int config_state; /* 0 unknown, 1 recording, 2 off */
static pid_t my_pid;               /* a vfork child (sharing our memory) has another pid */
static char out_dir[3072];
static int out_fd = -1;
static uint64_t t0, mono0_ns, real0_ns;
static atomic_flag registry_lock = ATOMIC_FLAG_INIT;
static atomic_flag write_lock = ATOMIC_FLAG_INIT;
static struct tbuf *registry;
static _Atomic int final_flushed;
static int write_failed;
static pthread_key_t exit_key;
static _Atomic int key_state; /* 0 none, 1 creating, 2 made, 3 failed */

static void spin_lock(atomic_flag *lock) {
    while (atomic_flag_test_and_set_explicit(lock, memory_order_acquire)) sched_yield();
}

static void spin_unlock(atomic_flag *lock) { atomic_flag_clear_explicit(lock, memory_order_release); }

static int read_small_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

static void configure(void) {
    int expected = 0;
    if (atomic_load(&config_state) != 0) return;
    const char *dir = getenv("MMREPLAY_MALLOC_DIR");
    int on = dir && dir[0] == '/' && strlen(dir) < sizeof(out_dir) - 64;
    if (on) {
        memcpy(out_dir, dir, strlen(dir) + 1);
        my_pid = getpid();
#if HAVE_TSC
        char source[64];
        const char *forced = getenv("MMREPLAY_MALLOC_CLOCK");
        if (forced && strcmp(forced, "monotonic") == 0)
            use_tsc = 0;
        else
            use_tsc = read_small_file("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                                      source, sizeof(source)) > 0 && strncmp(source, "tsc", 3) == 0;
#endif
        /* A (ticks, monotonic, realtime) triple: the reader turns ticks into times with it. */
        uint64_t m0 = clock_ns(CLOCK_MONOTONIC);
        t0 = ticks();
        real0_ns = clock_ns(CLOCK_REALTIME);
        mono0_ns = (m0 + clock_ns(CLOCK_MONOTONIC)) / 2;
    }
    atomic_compare_exchange_strong(&config_state, &expected, on ? 1 : 2);
}

static void note_lost(void) {
    /* The reader refuses a recording with a .lost file next to it: records were dropped. */
    char path[sizeof(out_dir) + 64];
    char *p = path;
    size_t n = strlen(out_dir);
    memcpy(p, out_dir, n);
    p += n;
    memcpy(p, "/lost", 6);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
}

static char *put_uint(char *p, unsigned long value) {
    char digits[24];
    int n = 0;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (n) *p++ = digits[--n];
    return p;
}

/* Open DIR/<pid>-<n>.mmalloc for this process image; called with write_lock held. */
static int open_output(void) {
    if (out_fd >= 0) return 0;
    char path[sizeof(out_dir) + 64];
    size_t n = strlen(out_dir);
    for (unsigned gen = 0; gen < 10000; gen++) {
        char *p = path;
        memcpy(p, out_dir, n);
        p += n;
        *p++ = '/';
        p = put_uint(p, (unsigned long)getpid());
        *p++ = '-';
        p = put_uint(p, gen);
        memcpy(p, ".mmalloc", 9);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == EEXIST) continue;
            return -1;
        }
        struct header h;
        memset(&h, 0, sizeof h);
        memcpy(h.magic, FILE_MAGIC, 8);
        h.version = FORMAT_VERSION;
        h.header_bytes = HEADER_BYTES;
        h.record_bytes = sizeof(struct record);
        h.block_bytes = sizeof(struct block);
        h.pid = (uint32_t)getpid();
        h.ppid = (uint32_t)getppid();
        h.clock = use_tsc ? CLOCK_KIND_TSC : CLOCK_KIND_MONOTONIC;
        h.buffer_bytes = BUFFER_BYTES;
        h.t0 = t0;
        h.mono0_ns = mono0_ns;
        h.real0_ns = real0_ns;
        ssize_t len = readlink("/proc/self/exe", h.exe, sizeof(h.exe) - 1);
        if (len < 0) h.exe[0] = 0;
        if (write(fd, &h, sizeof h) != (ssize_t)sizeof h) {
            close(fd);
            return -1;
        }
        out_fd = fd;
        return 0;
    }
    return -1;
}

static void write_all(const void *data, size_t size) {
    const char *p = data;
    spin_lock(&write_lock);
    if (out_fd < 0 && open_output() != 0) {
        if (!write_failed) note_lost();
        write_failed = 1;
        spin_unlock(&write_lock);
        return;
    }
    while (size) {
        ssize_t n = write(out_fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (!write_failed) note_lost();
            write_failed = 1;
            break;
        }
        p += n;
        size -= (size_t)n;
    }
    spin_unlock(&write_lock);
}

static int current_tid(void) {
    if (UNLIKELY(!my_tid)) my_tid = (int)syscall(SYS_gettid);
    return my_tid;
}

/* Write the records of b; the caller owns b (APPENDING or TAKEN). */
static void flush_buffer(struct tbuf *b, uint32_t flags) {
    if (!b->count && !(flags & (BLOCK_THREAD_EXIT | BLOCK_PROCESS_EXIT))) return;
    int saved = errno;
    struct block *k = b->block;
    k->magic = BLOCK_MAGIC;
    k->tid = (uint32_t)atomic_load(&b->tid);
    k->count = b->count;
    k->flags = flags;
    k->t = ticks();
    k->mono_ns = clock_ns(CLOCK_MONOTONIC);
    k->nested = b->nested;
    write_all(k, sizeof *k + (size_t)b->count * sizeof(struct record));
    b->count = 0;
    errno = saved;
}

/* One record written at once (after the process-exit flush). */
static void write_late(const struct record *r, uint64_t nested) {
    struct { struct block k; struct record r; } one;
    int saved = errno;
    memset(&one.k, 0, sizeof one.k);
    one.k.magic = BLOCK_MAGIC;
    one.k.tid = (uint32_t)current_tid();
    one.k.count = 1;
    one.k.flags = BLOCK_LATE;
    one.k.t = ticks();
    one.k.mono_ns = clock_ns(CLOCK_MONOTONIC);
    one.k.nested = nested;
    one.r = *r;
    write_all(&one, sizeof one);
    errno = saved;
}

static int thread_is_gone(int tid) {
    if (tid <= 0) return 1;
    return syscall(SYS_tgkill, getpid(), tid, 0) == -1 && errno == ESRCH;
}

static void thread_leaving(void *value);

static void make_exit_key(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&key_state, &expected, 1))
        atomic_store(&key_state, pthread_key_create(&exit_key, thread_leaving) == 0 ? 2 : 3);
}

/* This thread's buffer: a dead thread's, or a new mapping. Runs with in_shim set. */
static struct tbuf *thread_buffer(void) {
    int saved = errno;
    int tid = current_tid();
    struct tbuf *b = NULL, *leftover = NULL;
    spin_lock(&registry_lock);
    for (struct tbuf *c = registry; c; c = c->next) {
        if (c->exited && atomic_load(&c->state) == IDLE && thread_is_gone(atomic_load(&c->tid))) {
            b = c;
            break;
        }
    }
    if (b) {
        if (b->count) leftover = b;  /* what its thread recorded after its last destructor call */
        if (leftover) flush_buffer(b, 0);
        b->exited = 0;
        b->rounds = 0;
        b->nested = 0;
        atomic_store(&b->tid, tid);
    }
    spin_unlock(&registry_lock);
    int fresh = 0;
    if (!b) {
        void *m = mmap(NULL, BUFFER_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            errno = saved;
            return NULL;
        }
        b = m;
        memset(b, 0, sizeof *b);
        b->block = (struct block *)((char *)m + 64);
        b->recs = (struct record *)((char *)b->block + sizeof(struct block));
        b->cap = (uint32_t)((BUFFER_BYTES - 64 - sizeof(struct block)) / sizeof(struct record));
        atomic_store(&b->tid, tid);
        spin_lock(&registry_lock);
        b->next = registry;
        registry = b;
        spin_unlock(&registry_lock);
        fresh = 1;
    }
    b->nested += my_nested;
    my_nested = 0;
    if (fresh) {
        struct record *r = &b->recs[b->count++];
        memset(r, 0, sizeof *r);
        r->t = ticks();
        r->op = OP_OWN_MAP;
        r->ptr = (uint64_t)(uintptr_t)b;
        r->size = BUFFER_BYTES;
    }
    make_exit_key();
    if (atomic_load(&key_state) == 2) pthread_setspecific(exit_key, b);
    my_buf = b;
    errno = saved;
    return b;
}

/* Every thread's buffer, written. With ``final`` (the process is going), buffers stay TAKEN:
 * their threads' later calls are written one by one. */
static void flush_all(int final) {
    if (atomic_load(&config_state) != 1) return;
    /* A vfork child shares the parent's memory and buffers: the parent writes them. */
    if (getpid() != my_pid) return;
    in_shim++;
    spin_lock(&registry_lock);
    for (struct tbuf *b = registry; b; b = b->next) {
        int expected = IDLE;
        while (!atomic_compare_exchange_weak(&b->state, &expected, TAKEN)) {
            if (expected == TAKEN) break;  /* already taken (an earlier final flush) */
            expected = IDLE;
            sched_yield();
        }
        flush_buffer(b, final ? BLOCK_PROCESS_EXIT : 0);
        if (!final) atomic_store_explicit(&b->state, IDLE, memory_order_release);
    }
    if (final) atomic_store(&final_flushed, 1);
    spin_unlock(&registry_lock);
    in_shim--;
}

static void thread_leaving(void *value) {
    struct tbuf *b = value;
    if (!b) return;
    in_shim++;
    int expected = IDLE;
    if (atomic_compare_exchange_strong(&b->state, &expected, APPENDING)) {
        flush_buffer(b, b->rounds == 0 ? BLOCK_THREAD_EXIT : 0);
        b->exited = 1;
        atomic_store_explicit(&b->state, IDLE, memory_order_release);
    }
    /* Destructors of other keys may still free memory after this one: ask to be called again
     * (glibc repeats the destructor round up to PTHREAD_DESTRUCTOR_ITERATIONS times). */
    if (++b->rounds < 3 && atomic_load(&key_state) == 2) pthread_setspecific(exit_key, b);
    in_shim--;
}

/* ------------------------------------------------------------------------------------------ */
/* Recording */

static void record_slow(struct tbuf *b, const struct record *r);

static inline void record(uint8_t op, uint64_t t, uint64_t size, uint64_t ptr, uint64_t aux, int err) {
    if (UNLIKELY(atomic_load_explicit(&config_state, memory_order_relaxed) != 1)) {
        if (atomic_load(&config_state) == 0) configure();
        if (atomic_load(&config_state) != 1) return;
    }
    if (UNLIKELY(in_shim)) {
        if (my_buf) my_buf->nested++; else my_nested++;
        return;
    }
    struct tbuf *b = my_buf;
    if (UNLIKELY(!b)) {
        in_shim++;
        b = thread_buffer();
        in_shim--;
        if (!b) { my_nested++; return; }
    }
    int expected = IDLE;
    if (UNLIKELY(atomic_load_explicit(&final_flushed, memory_order_relaxed) ||
                 !atomic_compare_exchange_strong_explicit(&b->state, &expected, APPENDING,
                                                          memory_order_acquire, memory_order_relaxed))) {
        struct record late = {t, size, ptr, aux, op, (uint8_t)err, {0}};
        record_slow(b, &late);
        return;
    }
    struct record *r = &b->recs[b->count];
    r->t = t;
    r->size = size;
    r->ptr = ptr;
    r->aux = aux;
    r->op = op;
    r->err = (uint8_t)err;
    if (UNLIKELY(++b->count == b->cap)) {
        in_shim++;
        flush_buffer(b, 0);
        in_shim--;
    }
    atomic_store_explicit(&b->state, IDLE, memory_order_release);
}

static void record_slow(struct tbuf *b, const struct record *r) {
    in_shim++;
    if (atomic_load(&final_flushed)) {
        /* The process is exiting: the buffers were written; write this call at once. If this
         * thread's buffer is not TAKEN it may hold records (a thread started after the final
         * flush): write them first, in order. */
        int expected = IDLE;
        if (atomic_compare_exchange_strong(&b->state, &expected, TAKEN)) flush_buffer(b, BLOCK_LATE);
        write_late(r, b->nested);
    } else {
        /* TAKEN by a flusher that is not final (exec failing after the flush): wait for it. */
        int expected = IDLE;
        while (!atomic_compare_exchange_weak(&b->state, &expected, APPENDING)) {
            if (expected == TAKEN && atomic_load(&final_flushed)) {
                write_late(r, b->nested);
                in_shim--;
                return;
            }
            expected = IDLE;
            sched_yield();
        }
        b->recs[b->count++] = *r;
        if (b->count == b->cap) flush_buffer(b, 0);
        atomic_store_explicit(&b->state, IDLE, memory_order_release);
    }
    in_shim--;
}

static inline int failure(void *p, size_t size) {
    if (p || !size) return 0;
    return errno ? errno : ENOMEM;
}

/* Record a call of the malloc family that returned ``p`` and leave its errno to the caller: a
 * NULL answer is a failure unless ``asked`` is 0 (a request for nothing). */
static inline void *recorded(uint8_t op, void *p, uint64_t size, uint64_t aux, size_t asked) {
    int err = failure(p, asked);
    record(op, ticks(), size, (uintptr_t)p, aux, err);
    if (err) errno = err;
    return p;
}

/* Make ``real`` usable, or return ``fallback`` from the calling function while the dynamic
 * linker cannot give it yet (dlsym's own allocations, calls before the symbols are found). */
#define REAL_OR_RETURN(real, fallback) \
    do { \
        if (UNLIKELY(!(real))) { \
            resolve(); \
            if (!(real)) return (fallback); \
        } \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* The malloc family */

EXPORT void *malloc(size_t size) {
    REAL_OR_RETURN(real_malloc, boot_alloc(size, 16));
    return recorded(OP_MALLOC, real_malloc(size), size, 0, size);
}

EXPORT void free(void *p) {
    if (UNLIKELY(is_boot(p))) return;
    if (UNLIKELY(!real_free)) {
        resolve();
        if (!real_free) return;
    }
    uint64_t t = ticks();
    int saved = errno;
    real_free(p);
    record(OP_FREE, t, 0, (uintptr_t)p, 0, 0);
    errno = saved;
}

EXPORT void *calloc(size_t n, size_t size) {
    size_t total;
    uint64_t requested = __builtin_mul_overflow(n, size, &total) ? UINT64_MAX : total;
    if (UNLIKELY(!real_calloc)) {
        resolve();
        if (!real_calloc) {
            if (requested == UINT64_MAX) return NULL;
            void *p = boot_alloc(total, 16);
            if (p) memset(p, 0, total);  /* the static heap is zero, but be plain about it */
            return p;
        }
    }
    return recorded(OP_CALLOC, real_calloc(n, size), requested, 0,
                    total || requested == UINT64_MAX ? 1 : 0);
}

EXPORT void *realloc(void *old, size_t size) {
    if (UNLIKELY(is_boot(old))) {
        void *p = malloc(size);
        if (p) memcpy(p, old, boot_size(old) < size ? boot_size(old) : size);
        return p;
    }
    REAL_OR_RETURN(real_realloc, boot_alloc(size, 16));
    return recorded(OP_REALLOC, real_realloc(old, size), size, (uintptr_t)old, size);
}

EXPORT void *reallocarray(void *old, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        record(OP_REALLOCARRAY, ticks(), UINT64_MAX, 0, (uintptr_t)old, ENOMEM);
        errno = ENOMEM;
        return NULL;
    }
    if (UNLIKELY(is_boot(old))) return realloc(old, total);
    REAL_OR_RETURN(real_realloc, boot_alloc(total, 16));
    /* glibc's reallocarray calls its realloc internally, not through the PLT: call realloc
     * ourselves so that the call is made, and recorded, exactly once. */
    return recorded(OP_REALLOCARRAY, real_realloc(old, total), total, (uintptr_t)old, total);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    if (UNLIKELY(!real_posix_memalign)) {
        resolve();
        if (!real_posix_memalign) {
            void *p = boot_alloc(size, align);
            if (!p) return ENOMEM;
            *out = p;
            return 0;
        }
    }
    int ret = real_posix_memalign(out, align, size);
    record(OP_POSIX_MEMALIGN, ticks(), size, ret == 0 ? (uintptr_t)*out : 0, align, ret);
    return ret;
}

EXPORT void *aligned_alloc(size_t align, size_t size) {
    REAL_OR_RETURN(real_aligned_alloc, boot_alloc(size, align));
    return recorded(OP_ALIGNED_ALLOC, real_aligned_alloc(align, size), size, align, size);
}

EXPORT void *memalign(size_t align, size_t size) {
    REAL_OR_RETURN(real_memalign, boot_alloc(size, align));
    return recorded(OP_MEMALIGN, real_memalign(align, size), size, align, size);
}

EXPORT void *valloc(size_t size) {
    REAL_OR_RETURN(real_valloc, boot_alloc(size, 4096));
    return recorded(OP_VALLOC, real_valloc(size), size, 0, size);
}

EXPORT void *pvalloc(size_t size) {
    REAL_OR_RETURN(real_pvalloc, boot_alloc(size, 4096));
    return recorded(OP_PVALLOC, real_pvalloc(size), size, 0, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Process lifetime: exit, _exit, exec, fork */

/* _exit and _Exit: write every buffer out, then end through the real function (``*real``, read
 * once resolve() has run), or the raw syscall when there is none. */
typedef __attribute__((noreturn)) void (*exit_function)(int);

static __attribute__((noreturn)) void exit_through(exit_function *real, int status) {
    flush_all(1);
    resolve();
    if (*real) (*real)(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

EXPORT void _exit(int status) { exit_through(&real__exit, status); }

EXPORT void _Exit(int status) { exit_through(&real__Exit, status); }

EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    flush_all(0);
    resolve();
    return real_execve(path, argv, envp);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    flush_all(0);
    resolve();
    return real_execvpe(file, argv, envp);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
    flush_all(0);
    resolve();
    return real_fexecve(fd, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl, execlp, execle: glibc calls its execve internally, so they are rebuilt here.
 * COLLECT_ARGS starts ``ap`` after ``first`` and gathers the list up to its NULL into ``argv``,
 * on the caller's stack; the caller ends ``ap``. */
#define COLLECT_ARGS(first, ap, argv)                                   \
    va_list ap;                                                          \
    va_start(ap, first);                                                 \
    size_t argc_ = 1;                                                    \
    va_list count_;                                                      \
    va_copy(count_, ap);                                                 \
    while (va_arg(count_, char *)) argc_++;                              \
    va_end(count_);                                                      \
    char **argv = __builtin_alloca((argc_ + 1) * sizeof(char *));        \
    argv[0] = (char *)(first);                                           \
    for (size_t i_ = 1; i_ <= argc_; i_++) argv[i_] = va_arg(ap, char *);

EXPORT int execl(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return execve(path, argv, environ);
}

EXPORT int execlp(const char *file, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return execvpe(file, argv, environ);
}

EXPORT int execle(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

static void before_fork(void) {
    in_shim++;
    spin_lock(&registry_lock);
    spin_lock(&write_lock);
}

static void after_fork_parent(void) {
    spin_unlock(&write_lock);
    spin_unlock(&registry_lock);
    in_shim--;
}

static void after_fork_child(void) {
    /* The parent writes every record made before the fork; the child starts empty, in a file of
     * its own. Other threads' buffers have no owner here: they can be taken over. */
    my_tid = (int)syscall(SYS_gettid);
    my_pid = getpid();
    for (struct tbuf *b = registry; b; b = b->next) {
        b->count = 0;
        b->nested = 0;
        atomic_store(&b->state, IDLE);
        if (b != my_buf) {
            b->exited = 1;
            atomic_store(&b->tid, 0);
        } else {
            atomic_store(&b->tid, my_tid);
        }
    }
    my_nested = 0;
    if (out_fd >= 0) close(out_fd);
    out_fd = -1;
    write_failed = 0;
    atomic_flag_clear(&write_lock);
    atomic_flag_clear(&registry_lock);
    in_shim--;
}

static void at_exit(void) { flush_all(1); }

__attribute__((constructor)) static void start(void) {
    resolve();
    configure();
    if (atomic_load(&config_state) != 1) return;
    in_shim++;
    make_exit_key();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    atexit(at_exit);
    in_shim--;
}

__attribute__((destructor)) static void stop(void) { flush_all(1); }
