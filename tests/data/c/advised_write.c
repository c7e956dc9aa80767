/* The touch-order workload (issue 19, item 1): mmap, madvise(MADV_HUGEPAGE), then write.
 *
 * Maps 16 MiB of private anonymous memory, advises it MADV_HUGEPAGE, writes one byte per 4 KiB
 * page, and prints what its own /proc/self/smaps says about that mapping (AnonHugePages, Rss)
 * before unmapping it, so a test can compare a replay of its trace with what the kernel did
 * for the real program.  Output: "start=0x... length=N anon_huge_kb=N rss_kb=N".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LENGTH (16UL << 20)

static void smaps_of(unsigned long start, long *anon_huge_kb, long *rss_kb)
{
	char line[512];
	int inside = 0;
	FILE *smaps = fopen("/proc/self/smaps", "r");

	*anon_huge_kb = *rss_kb = -1;
	if (!smaps)
		return;
	while (fgets(line, sizeof(line), smaps)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			inside = lo <= start && start < hi;
			continue;
		}
		if (inside && !strncmp(line, "AnonHugePages:", 14))
			*anon_huge_kb = atol(line + 14);
		if (inside && !strncmp(line, "Rss:", 4))
			*rss_kb = atol(line + 4);
	}
	fclose(smaps);
}

int main(void)
{
	long anon_huge_kb, rss_kb;
	unsigned long i;
	char *p = mmap(NULL, LENGTH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	if (madvise(p, LENGTH, MADV_HUGEPAGE)) {
		perror("madvise");
		return 1;
	}
	for (i = 0; i < LENGTH; i += 4096)
		p[i] = 1;
	smaps_of((unsigned long)p, &anon_huge_kb, &rss_kb);
	printf("start=%p length=%lu anon_huge_kb=%ld rss_kb=%ld\n", (void *)p, LENGTH, anon_huge_kb,
	       rss_kb);
	munmap(p, LENGTH);
	return 0;
}
