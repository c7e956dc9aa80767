// SPDX-License-Identifier: MIT
/*
 * check_alignment: where does the running kernel place private anonymous mmaps?
 *
 * A fixed, mixed sequence of mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)
 * calls (nothing is touched), then, per length, how many start 2 MiB-aligned and how far each
 * mapping is from the nearest one of ours above it.  It also frees one 4 MiB mapping and asks
 * for 4 MiB again, and makes two kinds of hinted call, where the 6.7-6.12.0 rule and the
 * 6.13+/6.18 rule differ.  Used to check the kernels built by kernels/build.sh against the
 * upstream rules (see kernels/README.md for the expected and measured outputs).
 *
 * Build: gcc -O2 -static -o check_alignment check_alignment.c   (static: the same binary runs
 * in a guest booted with vng, whatever its userspace).
 *
 * Output: line-oriented, "key: value" and one row per length; `gap_above` lists, for each
 * mapping of that length, the distance in KiB from its end to the start of the nearest
 * mapping of this program above it, as "value_kib x count".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#define KIB 1024UL
#define MIB (1024UL * KIB)
#define PMD (2 * MIB)
#define MAX_MAPS 128

struct mapping {
	uintptr_t start;
	size_t len;
	int group;
};

struct group {
	const char *label;
	size_t len;
	int count;
};

/* The sequence: odd sizes >= 2 MiB, exact multiples, sub-PMD sizes, in this order. */
static const struct group groups[] = {
	{"3M+4K", 3 * MIB + 4 * KIB, 12},
	{"4M", 4 * MIB, 6},
	{"1M", 1 * MIB, 12},
	{"6M+8K", 6 * MIB + 8 * KIB, 4},
	{"2M", 2 * MIB, 8},
};
#define NGROUPS (sizeof(groups) / sizeof(groups[0]))

static struct mapping maps[MAX_MAPS];
static int nmaps;

static void *map_anon(void *hint, size_t len)
{
	void *p = mmap(hint, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("check_alignment: mmap");
		exit(1);
	}
	return p;
}

static int aligned(uintptr_t a)
{
	return a % PMD == 0;
}

/* Distance from the end of maps[i] to the start of the nearest live mapping above it, or -1. */
static long gap_above(int i)
{
	uintptr_t end = maps[i].start + maps[i].len, best = 0;

	for (int j = 0; j < nmaps; j++)
		if (maps[j].len && maps[j].start >= end && (!best || maps[j].start < best))
			best = maps[j].start;
	return best ? (long)(best - end) : -1;
}

static void print_gaps(int group)
{
	long seen[MAX_MAPS];
	int counts[MAX_MAPS], nseen = 0;

	for (int i = 0; i < nmaps; i++) {
		long g;
		int k;

		if (maps[i].group != group || !maps[i].len)
			continue;
		g = gap_above(i);
		for (k = 0; k < nseen && seen[k] != g; k++)
			;
		if (k == nseen) {
			seen[nseen] = g;
			counts[nseen++] = 0;
		}
		counts[k]++;
	}
	for (int k = 0; k < nseen; k++) {
		if (seen[k] < 0)
			printf("%snone x%d", k ? ", " : "", counts[k]);
		else
			printf("%s%ld x%d", k ? ", " : "", seen[k] / (long)KIB, counts[k]);
	}
}

/* VMAs from /proc/self/maps that overlap [lo, hi), and the unmapped bytes between them. */
static void count_vmas(uintptr_t lo, uintptr_t hi, int *vmas, uintptr_t *hole_bytes, int *holes)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	uintptr_t prev_end = 0;

	*vmas = 0;
	*hole_bytes = 0;
	*holes = 0;
	if (!f) {
		perror("check_alignment: /proc/self/maps");
		exit(1);
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) != 2 || e <= lo || s >= hi)
			continue;
		if (prev_end && s > prev_end) {
			*hole_bytes += s - prev_end;
			(*holes)++;
		}
		prev_end = e;
		(*vmas)++;
	}
	fclose(f);
}

static void print_thp_setting(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char buf[128] = "(THP not built in)";

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			strcpy(buf, "(unreadable)");
		fclose(f);
		buf[strcspn(buf, "\n")] = 0;
	}
	printf("thp_enabled: %s\n", buf);
}

/*
 * Hinted calls, made first (before the sequence leaves any holes), 4 MiB each:
 * - "occupied": the hint is an address already mapped, so the kernel must search.  6.7-6.12.0
 *   pad and align the search's result; 6.13+ (hint => no THP alignment) and <= 6.6 do not.
 *   Four such calls, each result kept and a 4 KiB page fixed right below it, so a plain
 *   top-down placement puts the next one 4 KiB lower and cannot start more than one of them
 *   2 MiB-aligned by chance.
 * - "exact hole": the hint is the start of a free hole exactly 4 MiB long, not 2 MiB-aligned.
 *   Every kernel can honour it; 6.7-6.12.0 ask for 4 MiB + 2 MiB at the hint, which does not
 *   fit, and place the mapping elsewhere (the Android ART report behind the 6.13 hint fix).
 */
static void hinted_calls(void)
{
	char *anchor = map_anon(NULL, 4 * KIB);
	int occupied_aligned = 0;
	char *lo, *mid, *hi, *got, *taken[4], *below[4];

	for (int i = 0; i < 4; i++) {
		taken[i] = map_anon(anchor, 4 * MIB);
		occupied_aligned += aligned((uintptr_t)taken[i]);
		below[i] = mmap(taken[i] - 4 * KIB, 4 * KIB, PROT_READ,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	}
	printf("hint_occupied_4M: aligned %d/4\n", occupied_aligned);
	for (int i = 0; i < 4; i++) {
		munmap(taken[i], 4 * MIB);
		if (below[i] != MAP_FAILED)
			munmap(below[i], 4 * KIB);
	}
	munmap(anchor, 4 * KIB);

	/* A hole of exactly 4 MiB starting 4 KiB above a 2 MiB boundary, between two mappings. */
	lo = map_anon(NULL, 16 * MIB);
	munmap(lo, 16 * MIB);
	lo = (char *)(((uintptr_t)lo + PMD - 1) & ~(PMD - 1));	/* inside the freed 16 MiB */
	hi = lo + 4 * KIB + 4 * MIB;
	if (mmap(lo, 4 * KIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
		    != lo ||
	    mmap(hi, 4 * KIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
		    != hi) {
		printf("hint_exact_hole_4M: could not build the hole\n");
		return;
	}
	mid = lo + 4 * KIB;
	got = map_anon(mid, 4 * MIB);
	printf("hint_exact_hole_4M: %s, aligned %s\n", got == mid ? "at hint" : "moved",
	       aligned((uintptr_t)got) ? "yes" : "no");
	munmap(got, 4 * MIB);
	munmap(lo, 4 * KIB);
	munmap(hi, 4 * KIB);
}

int main(void)
{
	struct utsname u;
	uintptr_t lo = UINTPTR_MAX, hi = 0, hole_bytes, refill_old, refill_new;
	int vmas, holes, refill;

	uname(&u);
	printf("kernel: %s %s\n", u.release, u.version);
	print_thp_setting();
	hinted_calls();

	for (unsigned g = 0; g < NGROUPS; g++)
		for (int i = 0; i < groups[g].count; i++) {
			maps[nmaps].start = (uintptr_t)map_anon(NULL, groups[g].len);
			maps[nmaps].len = groups[g].len;
			maps[nmaps++].group = g;
		}

	printf("%-7s %9s %6s %8s  %s\n", "length", "len_kib", "count", "aligned",
	       "gap_above_kib (value x count)");
	for (unsigned g = 0; g < NGROUPS; g++) {
		int n = 0;

		for (int i = 0; i < nmaps; i++)
			n += maps[i].group == (int)g && aligned(maps[i].start);
		printf("%-7s %9lu %6d %8d  ", groups[g].label, groups[g].len / KIB, groups[g].count, n);
		print_gaps(g);
		printf("\n");
	}

	for (int i = 0; i < nmaps; i++) {
		lo = maps[i].start < lo ? maps[i].start : lo;
		hi = maps[i].start + maps[i].len > hi ? maps[i].start + maps[i].len : hi;
	}
	count_vmas(lo, hi, &vmas, &hole_bytes, &holes);
	printf("span: %lu KiB, %d VMAs, %d holes, %lu KiB of holes (for %d mappings)\n",
	       (unsigned long)(hi - lo) / KIB, vmas, holes, (unsigned long)hole_bytes / KIB, nmaps);

	/* Free the third 4 MiB mapping and ask for 4 MiB again: does the exact hole get reused? */
	refill = 12 + 2;
	refill_old = maps[refill].start;
	munmap((void *)refill_old, maps[refill].len);
	refill_new = (uintptr_t)map_anon(NULL, 4 * MIB);
	printf("refill_4M: %s, aligned %s\n",
	       refill_new == refill_old ? "same address" : "new address",
	       aligned(refill_new) ? "yes" : "no");
	return 0;
}
