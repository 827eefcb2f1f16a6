/*
 * kpagedump: the guest's own view of its free memory (splitmem guest kit)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Runs inside the test guest to validate the host's introspection of the
 * buddy allocator against what the kernel itself reports.
 *
 *   kpagedump hold MIB STRIDE   allocate and touch MIB MiB, give back all
 *                               but every STRIDE-th 64 KiB piece, then
 *                               sleep holding the rest (run it with &)
 *   kpagedump churn MIB         allocate and touch MIB MiB, then exit
 *   kpagedump snapshot          print "kpagedump: ready", wait for a line
 *                               on standard input, then take the snapshot
 *                               and print it
 *
 * The snapshot is read from /proc/kpageflags, /proc/buddyinfo,
 * /proc/zoneinfo and /proc/meminfo at once, before anything is printed,
 * so that printing it does not change it.  /proc/buddyinfo is read
 * before and after /proc/kpageflags, and the pair is read again until
 * both agree: then no block was allocated or freed while the page flags
 * were read, and the KPF_BUDDY pages in them are consistent with the
 * counts.  It is printed as:
 *
 *   kpagedump: begin pfns=N
 *   <class><count> ...            run-length encoded, one class per pfn
 *   kpagedump: buddyinfo <line>   one per line of /proc/buddyinfo
 *   kpagedump: meminfo MemFree: ... kB   (and MemTotal, VmallocUsed)
 *   kpagedump: pcp PAGES threshold PAGES   pages on the per-CPU lists,
 *                                 sum of the zones' vmstat thresholds
 *   kpagedump: stable reads=R ready=0|1   R reads until buddyinfo was
 *                                 stable; ready=1 if it was the same
 *                                 when "ready" was printed
 *   kpagedump: end runs=R
 *
 * Classes: B  in a free buddy block: KPF_BUDDY, which the kernel sets on
 *             the head and on every tail page of a free block
 *          U  in use: any other flag (a free page has none: the kernel
 *             clears them all when it frees a page)
 *          N  no flag at all: on a per-CPU free list, or allocated
 *             without flags (vmalloc, kernel stacks, ...)
 *          X  no struct page (KPF_NOPAGE)
 *
 * The guest kernels of the tests have no CONFIG_PAGE_OWNER, so the
 * guest cannot list its allocations; it does not need to: a flagless
 * page is not in a free block, and the test checks that the KPF_BUDDY
 * pages add up to the free-block counts of /proc/buddyinfo.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE_SIZE 4096UL
#define PIECE (64 * 1024UL)

/* Up to 8 GiB of guest-physical address space; the tests use less. */
#define KFLAGS_MAX (16 << 20)
#define TEXT_MAX (64 << 10)

/* Bits of /proc/kpageflags (include/uapi/linux/kernel-page-flags.h). */
#define KPF_BUDDY 10
#define KPF_NOPAGE 20

#define BIT(n) (1ULL << (n))

static void die(const char *what)
{
    fprintf(stderr, "kpagedump: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned char *touch(unsigned long mib)
{
    size_t len = mib << 20;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t i;

    if (p == MAP_FAILED) {
        die("mmap");
    }
    for (i = 0; i < len; i += PAGE_SIZE) {
        p[i] = (unsigned char)(i >> 12) | 1;
    }
    return p;
}

static void __attribute__((noreturn)) hold(unsigned long mib,
                                           unsigned long stride)
{
    unsigned char *p = touch(mib);
    size_t len = mib << 20, off, kept = 0;
    unsigned long n = 0;

    for (off = 0; off + PIECE <= len; off += PIECE, n++) {
        if (stride && n % stride == 0) {
            kept += PIECE;
            continue;
        }
        if (munmap(p + off, PIECE)) {
            die("munmap");
        }
    }
    printf("kpagedump: holding %zu KiB\n", kept >> 10);
    fflush(stdout);
    for (;;) {
        pause();
    }
}

static int churn(unsigned long mib)
{
    unsigned char *p = touch(mib);

    if (munmap(p, mib << 20)) {
        die("munmap");
    }
    printf("kpagedump: churned %lu MiB\n", mib);
    return 0;
}

/*
 * Read all of @path into @buf.  The buffers are allocated and touched
 * before the snapshot, so that reading it allocates no memory.
 */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    size_t n = 0;
    ssize_t r;

    if (fd < 0) {
        die(path);
    }
    while (n < cap && (r = read(fd, buf + n, cap - n)) != 0) {
        if (r < 0) {
            die(path);
        }
        n += r;
    }
    if (n == cap) {
        fprintf(stderr, "kpagedump: %s: larger than %zu bytes\n", path, cap);
        exit(1);
    }
    close(fd);
    return n;
}

static char *prealloc(size_t len)
{
    char *p = malloc(len);

    if (!p) {
        die("malloc");
    }
    /*
     * Not zero: GCC turns malloc() and a zeroing memset() into calloc(),
     * which leaves fresh pages untouched, and the kernel would allocate
     * them while the snapshot is read.
     */
    memset(p, 1, len);
    return p;
}

static char classify(uint64_t f)
{
    if (f & BIT(KPF_NOPAGE)) {
        return 'X';
    }
    if (f & BIT(KPF_BUDDY)) {
        return 'B';
    }
    return f ? 'U' : 'N';
}

/* Sum of the numbers after @key at the start of a line (spaces skipped). */
static unsigned long sum_field(const char *text, const char *key)
{
    size_t klen = strlen(key);
    unsigned long sum = 0, v;
    const char *s = text;

    while (*s) {
        s += strspn(s, " \t");
        if (!strncmp(s, key, klen) && sscanf(s + klen, "%lu", &v) == 1) {
            sum += v;
        }
        s = strchrnul(s, '\n');
        if (*s) {
            s++;
        }
    }
    return sum;
}

#define MAX_READS 10

static int snapshot(void)
{
    char line[64];
    size_t klen, blen, b2len, b0len, mlen, zlen, i, npfn, runs = 0;
    char *kflags, *buddy, *buddy2, *buddy0, *mem, *zone, *s, *save;
    char cur = 0;
    unsigned long count = 0, col = 0;
    int reads = 0, ready_same;

    /* Everything allocated up front: the snapshot is taken from here on. */
    kflags = prealloc(KFLAGS_MAX);
    buddy = prealloc(TEXT_MAX);
    buddy2 = prealloc(TEXT_MAX);
    buddy0 = prealloc(TEXT_MAX);
    mem = prealloc(TEXT_MAX);
    zone = prealloc(TEXT_MAX);
    b0len = slurp("/proc/buddyinfo", buddy0, TEXT_MAX - 1);
    printf("kpagedump: ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin)) {
        return 1;
    }
    /*
     * Page flags between two equal reads of the free-block counts: the
     * test checks the heads in the flags against the counts exactly.
     */
    do {
        blen = slurp("/proc/buddyinfo", buddy, TEXT_MAX - 1);
        klen = slurp("/proc/kpageflags", kflags, KFLAGS_MAX);
        b2len = slurp("/proc/buddyinfo", buddy2, TEXT_MAX - 1);
        reads++;
    } while ((blen != b2len || memcmp(buddy, buddy2, blen)) &&
             reads < MAX_READS);
    zlen = slurp("/proc/zoneinfo", zone, TEXT_MAX - 1);
    mlen = slurp("/proc/meminfo", mem, TEXT_MAX - 1);
    if (blen != b2len || memcmp(buddy, buddy2, blen)) {
        reads = 0;              /* never stable */
    }
    ready_same = b0len == b2len && !memcmp(buddy0, buddy2, b0len);

    npfn = klen / 8;
    printf("kpagedump: begin pfns=%zu\n", npfn);
    for (i = 0; i <= npfn; i++) {
        char c = 0;

        if (i < npfn) {
            uint64_t f;

            memcpy(&f, kflags + i * 8, 8);
            c = classify(f);
        }
        if (c == cur) {
            count++;
            continue;
        }
        if (cur) {
            col += printf("%c%lu ", cur, count);
            runs++;
            if (col > 100) {
                putchar('\n');
                col = 0;
            }
        }
        cur = c;
        count = 1;
    }
    if (col) {
        putchar('\n');
    }
    buddy2[b2len] = '\0';
    for (s = strtok_r(buddy2, "\n", &save); s;
         s = strtok_r(NULL, "\n", &save)) {
        printf("kpagedump: buddyinfo %s\n", s);
    }
    mem[mlen] = '\0';
    for (s = strtok_r(mem, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(s, "MemFree:", 8) || !strncmp(s, "MemTotal:", 9) ||
            !strncmp(s, "VmallocUsed:", 12)) {
            printf("kpagedump: meminfo %s\n", s);
        }
    }
    zone[zlen] = '\0';
    printf("kpagedump: pcp %lu threshold %lu\n", sum_field(zone, "count:"),
           sum_field(zone, "vm stats threshold:"));
    printf("kpagedump: stable reads=%d ready=%d\n", reads, ready_same);
    printf("kpagedump: end runs=%zu\n", runs);
    return 0;
}

static unsigned long num(const char *s)
{
    unsigned long v;

    if (sscanf(s, "%lu", &v) != 1) {
        fprintf(stderr, "kpagedump: not a number: %s\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "hold")) {
        hold(num(argv[2]), num(argv[3]));
    }
    if (argc == 3 && !strcmp(argv[1], "churn")) {
        return churn(num(argv[2]));
    }
    if (argc == 2 && !strcmp(argv[1], "snapshot")) {
        return snapshot();
    }
    fprintf(stderr, "usage: kpagedump hold MIB STRIDE | churn MIB | "
            "snapshot\n");
    return 2;
}
