/* Known allocations for tests/test_malloc_record.py (build with -fno-builtin: the compiler would
 * turn realloc(NULL, n) into malloc(n) and drop free(NULL)).
 *
 * No argument: two threads, a realloc chain, the aligned family. Each thread notes every call it
 * makes (op, size, pointer); at the end the program prints them, one per line,
 * "tid op size pointer old-pointer", so the test can compare them with what the recorder saw.
 * Printing happens after the last call under test (stdio allocates).
 *
 * "fork-exec": malloc(111111), fork; the child mallocs 222222 and execs this program with
 * "image", which mallocs 333333 and exits; the parent waits and frees.
 *
 * "buffers": 16 blocks of 1 MiB allocated, written, then freed (glibc above its mmap threshold
 * maps each one on its own; jemalloc carves them from larger extents).
 *
 * "mtrace": calls mtrace(3), then a few calls of each kind (for glibc's own tracer). */
#define _GNU_SOURCE
#include <malloc.h>
#include <mcheck.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct call { const char *op; size_t size; void *ptr; void *old; long tid; };
static struct call calls[2][64];
static int ncalls[2];

static void note(int who, const char *op, size_t size, void *ptr, void *old) {
    struct call *c = &calls[who][ncalls[who]++];
    c->op = op; c->size = size; c->ptr = ptr; c->old = old; c->tid = syscall(SYS_gettid);
}

static void *worker(void *unused) {
    (void)unused;
    void *a = malloc(200); note(1, "malloc", 200, a, NULL);
    void *b = calloc(3, 50); note(1, "calloc", 150, b, NULL);
    free(a); note(1, "free", 0, a, NULL);
    /* a realloc chain: from nothing, grown past the mmap threshold, shrunk, freed */
    void *r = realloc(NULL, 10); note(1, "realloc", 10, r, NULL);
    void *r2 = realloc(r, 300000); note(1, "realloc", 300000, r2, r);
    void *r3 = realloc(r2, 5); note(1, "realloc", 5, r3, r2);
    free(r3); note(1, "free", 0, r3, NULL);
    free(b); note(1, "free", 0, b, NULL);
    return NULL;  /* exits with its calls still buffered */
}

static int fork_exec(const char *self) {
    void *mine = malloc(111111);
    pid_t child = fork();
    if (child == 0) {
        void *theirs = malloc(222222);
        (void)theirs;
        execl(self, self, "image", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    free(mine);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int buffers(void) {
    char *blocks[16];
    for (int i = 0; i < 16; i++) {
        blocks[i] = malloc(1 << 20);
        if (!blocks[i]) return 1;
        for (int j = 0; j < (1 << 20); j += 4096) blocks[i][j] = 1;
    }
    for (int i = 0; i < 16; i++) free(blocks[i]);
    return 0;
}

static int traced(void) {
    mtrace();
    void *a = malloc(100);
    void *b = calloc(2, 50);
    a = realloc(a, 5000);
    void *c = NULL;
    if (posix_memalign(&c, 64, 300) != 0) return 1;
    void *d = memalign(4096, 10);
    void *e = realloc(NULL, 7);
    e = realloc(e, 0);
    free(a);
    free(b);
    free(c);
    free(d);
    muntrace();
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "fork-exec") == 0) return fork_exec(argv[0]);
    if (argc > 1 && strcmp(argv[1], "mtrace") == 0) return traced();
    if (argc > 1 && strcmp(argv[1], "buffers") == 0) return buffers();
    if (argc > 1 && strcmp(argv[1], "image") == 0) {
        void *image = malloc(333333);
        free(image);
        _exit(0);  /* not exit(): the recorder must write its buffer in _exit too */
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, NULL) != 0) return 1;
    void *m = malloc(100); note(0, "malloc", 100, m, NULL);
    void *p = NULL;
    posix_memalign(&p, 64, 1000); note(0, "posix_memalign", 1000, p, NULL);
    void *q = aligned_alloc(4096, 8192); note(0, "aligned_alloc", 8192, q, NULL);
    void *g = memalign(256, 700); note(0, "memalign", 700, g, NULL);
    void *v = valloc(5000); note(0, "valloc", 5000, v, NULL);
    void *w = pvalloc(100); note(0, "pvalloc", 100, w, NULL);
    void *big = malloc(1 << 20); note(0, "malloc", 1 << 20, big, NULL);
    void *c = realloc(m, 4000); note(0, "realloc", 4000, c, m);
    free(big); note(0, "free", 0, big, NULL);
    free(p); note(0, "free", 0, p, NULL);
    free(q); note(0, "free", 0, q, NULL);
    free(g); note(0, "free", 0, g, NULL);
    free(v); note(0, "free", 0, v, NULL);
    free(w); note(0, "free", 0, w, NULL);
    free(c); note(0, "free", 0, c, NULL);
    free(NULL); note(0, "free", 0, NULL, NULL);
    pthread_join(thread, NULL);
    for (int who = 0; who < 2; who++)
        for (int i = 0; i < ncalls[who]; i++)
            printf("%ld %s %zu %lx %lx\n", calls[who][i].tid, calls[who][i].op, calls[who][i].size,
                   (unsigned long)calls[who][i].ptr, (unsigned long)calls[who][i].old);
    return 0;
}
