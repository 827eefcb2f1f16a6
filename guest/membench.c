/*
 * membench: memory throughput over N MiB, second by second (splitmem
 * guest kit)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Runs inside the test guest, where the benchmarks of a split-memory VM
 * (remote page-in and page-out) compare it with the same VM with all its
 * memory resident. It allocates N MiB, writes every page once (so that
 * each is a real page of the guest, not the shared zero page), then for
 * the given time reads or writes whole 4 KiB pages, in order (wrapping)
 * or at random, and prints the throughput of each second: a page that
 * has to come from a sub-host shows in the second it was touched.
 *
 * Usage: membench MIB MODE SECONDS [SEED]
 *   MODE: seqread, seqwrite, randread or randwrite
 *   SECONDS: how long to run after the fill; 0: until SIGTERM or SIGINT
 *
 * Lines it prints (stable, parsed by benchmarks and tests):
 *   membench: filled N MiB pages=P ms=T
 *   membench: t=S MB/s=X pages=K
 *   membench: done mode=M seconds=S pages=K MB/s=X bad=B
 * MB/s counts 10^6 bytes of pages touched per second. Every page touched
 * is checked against what was written there last (a read checks all of
 * it, a write its first and last word before it writes): bad counts the
 * touches that found a page wrong, 0 on a VM that pages correctly;
 * the exit status is 1 then. MEMBENCH_CORRUPT=P (for its own test)
 * changes a word of page P after the fill, as wrong paging would.
 */
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE_SIZE 4096
#define WORDS_PER_PAGE (PAGE_SIZE / sizeof(uint64_t))
/* Pages between two looks at the clock */
#define CLOCK_EVERY 64
#define MIB_MAX (1ul << 20)
#define SECONDS_MAX (7 * 24 * 3600ul)

static volatile sig_atomic_t want_exit;

static void on_signal(int sig)
{
    (void)sig;
    want_exit = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* xorshift64*: cheap, and every page index comes up */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* What word 0 of @page holds after its write number @round */
static uint64_t page_value(uint64_t page, uint32_t round)
{
    return page << 24 ^ (uint64_t)round << 52 ^ 0x5a5a;
}

/* Whether @page holds all of write @round */
static bool read_page(const uint64_t *p, uint64_t page, uint32_t round)
{
    uint64_t v = page_value(page, round), bad = 0;
    size_t i;

    for (i = 0; i < WORDS_PER_PAGE; i++) {
        bad |= p[i] ^ (v + i);
    }
    return !bad;
}

/* Whether @page held write @round at both ends; then write the next */
static bool write_page(uint64_t *p, uint64_t page, uint32_t *round)
{
    uint64_t v = page_value(page, *round);
    bool ok = p[0] == v && p[WORDS_PER_PAGE - 1] == v + WORDS_PER_PAGE - 1;
    size_t i;

    v = page_value(page, ++*round);
    for (i = 0; i < WORDS_PER_PAGE; i++) {
        p[i] = v + i;
    }
    return ok;
}

/* A decimal number in [0, @max], digits only, nothing after it */
static bool parse_ulong(const char *s, unsigned long max, unsigned long *v)
{
    int len = -1;

    return s[0] >= '0' && s[0] <= '9' && strlen(s) <= 19 &&
           sscanf(s, "%lu%n", v, &len) == 1 && len == (int)strlen(s) &&
           *v <= max;
}

int main(int argc, char **argv)
{
    static const char *const modes[] = {
        "seqread", "seqwrite", "randread", "randwrite",
    };
    unsigned long mib, seconds, seed = 1, bad_page;
    const char *corrupt;
    uint64_t *mem, npages, page = 0, rnd, bad = 0, total = 0, in_second = 0;
    uint32_t *round;
    int64_t t0, t_second, t_end, t;
    unsigned mode, s = 0;
    bool random_order, write;
    struct sigaction sa;

    for (mode = 0; argc >= 4 && mode < 4; mode++) {
        if (!strcmp(argv[2], modes[mode])) {
            break;
        }
    }
    if (argc < 4 || argc > 5 || mode == 4 ||
        !parse_ulong(argv[1], MIB_MAX, &mib) || !mib ||
        !parse_ulong(argv[3], SECONDS_MAX, &seconds) ||
        (argc == 5 && !parse_ulong(argv[4], ULONG_MAX, &seed))) {
        fprintf(stderr, "usage: membench MIB seqread|seqwrite|randread|"
                "randwrite SECONDS [SEED]\n");
        return 2;
    }
    random_order = mode >= 2;
    write = mode & 1;
    rnd = seed ? seed : 1;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    npages = (uint64_t)mib * (1024 * 1024 / PAGE_SIZE);
    mem = mmap(NULL, npages * PAGE_SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("membench: mmap");
        return 1;
    }
    round = calloc(npages, sizeof(*round));
    if (!round) {
        perror("membench: calloc");
        return 1;
    }
    t0 = now_ns();
    for (page = 0; page < npages; page++) {
        /* Fresh anonymous memory reads as zeros: no check on the fill */
        write_page(mem + page * WORDS_PER_PAGE, page, &round[page]);
    }
    corrupt = getenv("MEMBENCH_CORRUPT");
    if (corrupt && parse_ulong(corrupt, ULONG_MAX, &bad_page) &&
        bad_page < npages) {
        mem[bad_page * WORDS_PER_PAGE + WORDS_PER_PAGE - 1] ^= 1;
    }
    printf("membench: filled %lu MiB pages=%" PRIu64 " ms=%" PRId64 "\n",
           mib, npages, (now_ns() - t0) / 1000000);
    fflush(stdout);

    t0 = t_second = now_ns();
    t_end = seconds ? t0 + (int64_t)seconds * 1000000000ll : INT64_MAX;
    page = 0;
    while (!want_exit) {
        unsigned i;

        for (i = 0; i < CLOCK_EVERY; i++) {
            uint64_t pg = random_order ? next_random(&rnd) % npages
                                       : page++ % npages;
            uint64_t *p = mem + pg * WORDS_PER_PAGE;

            bad += !(write ? write_page(p, pg, &round[pg])
                           : read_page(p, pg, round[pg]));
        }
        total += CLOCK_EVERY;
        in_second += CLOCK_EVERY;
        t = now_ns();
        if (t - t_second >= 1000000000ll) {
            printf("membench: t=%u MB/s=%.1f pages=%" PRIu64 "\n", ++s,
                   in_second * PAGE_SIZE * 1e3 / (t - t_second), in_second);
            fflush(stdout);
            t_second = t;
            in_second = 0;
        }
        if (t >= t_end) {
            break;
        }
    }
    t = now_ns();
    printf("membench: done mode=%s seconds=%.3f pages=%" PRIu64
           " MB/s=%.1f bad=%" PRIu64 "\n", modes[mode], (t - t0) / 1e9,
           total, total * PAGE_SIZE * 1e3 / (t - t0 > 0 ? t - t0 : 1), bad);
    return bad ? 1 : 0;
}
