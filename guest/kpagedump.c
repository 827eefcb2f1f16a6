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
 * The snapshot is read from /proc/kpageflags, /proc/buddyinfo and
 * /proc/meminfo at once, before anything is printed, so that printing it
 * does not change it.  It is printed as:
 *
 *   kpagedump: begin pfns=N
 *   <class><count> ...            run-length encoded, one class per pfn
 *   kpagedump: buddyinfo <line>   one per line of /proc/buddyinfo
 *   kpagedump: meminfo MemFree: ... kB
 *   kpagedump: end runs=R
 *
 * Classes: B  head of a free buddy block (KPF_BUDDY)
 *          U  in use: any flag of a page that the kernel or a process owns
 *          N  no such flag (tail of a free block, per-CPU free list,
 *             or a page allocated without flags)
 *          X  no struct page (KPF_NOPAGE) or unreadable
 */
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
#define KPF_LOCKED 0
#define KPF_ERROR 1
#define KPF_DIRTY 4
#define KPF_LRU 5
#define KPF_SLAB 7
#define KPF_WRITEBACK 8
#define KPF_BUDDY 10
#define KPF_MMAP 11
#define KPF_ANON 12
#define KPF_SWAPCACHE 13
#define KPF_SWAPBACKED 14
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_HUGE 17
#define KPF_UNEVICTABLE 18
#define KPF_HWPOISON 19
#define KPF_NOPAGE 20
#define KPF_KSM 21
#define KPF_THP 22
#define KPF_OFFLINE 23
#define KPF_ZERO_PAGE 24
#define KPF_PGTABLE 26
#define KPF_RESERVED 32
#define KPF_MLOCKED 33
#define KPF_PRIVATE 35
#define KPF_PRIVATE_2 36
#define KPF_OWNER_PRIVATE 37

#define BIT(n) (1ULL << (n))

static const uint64_t in_use =
    BIT(KPF_LOCKED) | BIT(KPF_ERROR) | BIT(KPF_DIRTY) | BIT(KPF_LRU) |
    BIT(KPF_SLAB) | BIT(KPF_WRITEBACK) | BIT(KPF_MMAP) | BIT(KPF_ANON) |
    BIT(KPF_SWAPCACHE) | BIT(KPF_SWAPBACKED) | BIT(KPF_COMPOUND_HEAD) |
    BIT(KPF_COMPOUND_TAIL) | BIT(KPF_HUGE) | BIT(KPF_UNEVICTABLE) |
    BIT(KPF_HWPOISON) | BIT(KPF_KSM) | BIT(KPF_THP) | BIT(KPF_OFFLINE) |
    BIT(KPF_ZERO_PAGE) | BIT(KPF_PGTABLE) | BIT(KPF_RESERVED) |
    BIT(KPF_MLOCKED) | BIT(KPF_PRIVATE) | BIT(KPF_PRIVATE_2) |
    BIT(KPF_OWNER_PRIVATE);

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
    memset(p, 0, len);
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
    return (f & in_use) ? 'U' : 'N';
}

static int snapshot(void)
{
    char line[64];
    size_t klen, blen, mlen, i, npfn, runs = 0;
    char *kflags, *buddy, *mem, *s, *save;
    char cur = 0;
    unsigned long count = 0, col = 0;

    /* Everything allocated up front: the snapshot is taken from here on. */
    kflags = prealloc(KFLAGS_MAX);
    buddy = prealloc(TEXT_MAX);
    mem = prealloc(TEXT_MAX);
    printf("kpagedump: ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin)) {
        return 1;
    }
    klen = slurp("/proc/kpageflags", kflags, KFLAGS_MAX);
    blen = slurp("/proc/buddyinfo", buddy, TEXT_MAX - 1);
    mlen = slurp("/proc/meminfo", mem, TEXT_MAX - 1);

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
    buddy[blen] = '\0';
    for (s = strtok_r(buddy, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        printf("kpagedump: buddyinfo %s\n", s);
    }
    mem[mlen] = '\0';
    for (s = strtok_r(mem, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(s, "MemFree:", 8) || !strncmp(s, "MemTotal:", 9)) {
            printf("kpagedump: meminfo %s\n", s);
        }
    }
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
