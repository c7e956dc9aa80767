/* The brk heap workload (issue 19, item 2): grow the heap with sbrk, advise it MADV_HUGEPAGE,
 * write it, shrink it, grow it again, write again.
 *
 * Prints what the kernel did for the real program, for a test to compare with the replay of its
 * trace: "heap_start=0x... grown=N minflt=N anon_huge_kb=N", where minflt counts the page faults
 * of the two write loops (getrusage) and anon_huge_kb is the AnonHugePages of the [heap] VMAs in
 * /proc/self/smaps after the second loop (two VMAs: the advised part does not merge with the
 * part brk adds later).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define FIRST (24L << 20)
#define SHRINK (8L << 20)
#define SECOND (16L << 20)

static long minor_faults(void)
{
	struct rusage usage;

	getrusage(RUSAGE_SELF, &usage);
	return usage.ru_minflt;
}

static long heap_anon_huge_kb(void)
{
	char line[512];
	int inside = 0;
	long kb = 0;
	FILE *smaps = fopen("/proc/self/smaps", "r");

	if (!smaps)
		return -1;
	while (fgets(line, sizeof(line), smaps)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			inside = strstr(line, "[heap]") != NULL;
			continue;
		}
		if (inside && !strncmp(line, "AnonHugePages:", 14))
			kb += atol(line + 14);
	}
	fclose(smaps);
	return kb;
}

static void write_pages(char *from, char *to)
{
	for (volatile char *p = from; p < to; p += 4096)
		*p = 1;
}

int main(void)
{
	char *start = sbrk(0), *end;
	long faults = 0, before;

	if (sbrk(FIRST) == (void *)-1)
		return 1;
	end = start + FIRST;
	if (madvise((void *)(((uintptr_t)start + 4095) & ~4095UL), FIRST - 4096, MADV_HUGEPAGE))
		return 1;
	before = minor_faults();
	write_pages(start, end);
	faults += minor_faults() - before;
	if (sbrk(-SHRINK) == (void *)-1)
		return 1;
	end -= SHRINK;
	if (sbrk(SECOND) == (void *)-1)
		return 1;
	before = minor_faults();
	write_pages(end, end + SECOND);
	faults += minor_faults() - before;
	end += SECOND;
	printf("heap_start=%p grown=%ld minflt=%ld anon_huge_kb=%ld\n", (void *)start,
	       FIRST + SECOND, faults, heap_anon_huge_kb());
	return 0;
}
