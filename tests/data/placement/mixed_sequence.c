/* The mixed mmap sequence of issue 19 item 6: which starts does the kernel choose?
 * 12 x (3 MiB + 4 KiB), 6 x 4 MiB, 12 x 1 MiB, 4 x (6 MiB + 8 KiB), then the third 4 MiB
 * mapping is unmapped and 4 MiB asked for again. Prints one line per mmap: index, length,
 * address, and at the end the counts of 2 MiB-aligned starts by size. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define KIB 1024UL
#define MIB (1024UL * KIB)
#define PMD (2 * MIB)

static unsigned long big_aligned, big, small_aligned, small;

static void *map(int index, unsigned long length)
{
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    unsigned long a = (unsigned long)p;
    printf("mmap %2d len %9lu addr 0x%lx%s\n", index, length, a, a % PMD ? "" : " aligned");
    if (length >= PMD) { big++; big_aligned += a % PMD == 0; }
    else { small++; small_aligned += a % PMD == 0; }
    return p;
}

int main(void)
{
    void *four[6];
    int i, n = 0;
    for (i = 0; i < 12; i++) map(n++, 3 * MIB + 4 * KIB);
    for (i = 0; i < 6; i++) four[i] = map(n++, 4 * MIB);
    for (i = 0; i < 12; i++) map(n++, 1 * MIB);
    for (i = 0; i < 4; i++) map(n++, 6 * MIB + 8 * KIB);
    munmap(four[2], 4 * MIB);
    void *again = map(n++, 4 * MIB);
    printf("hole 0x%lx reused %s\n", (unsigned long)four[2], again == four[2] ? "yes" : "no");
    printf(">= 2 MiB: %lu of %lu aligned; < 2 MiB: %lu of %lu aligned\n",
           big_aligned, big, small_aligned, small);
    return 0;
}
