/*
 * memfill: fill guest memory with a verifiable pattern (splitmem guest kit)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Runs inside the test guest. It allocates N MiB, writes a pattern that
 * depends on the page index, a per-page generation counter and a seed,
 * reports progress on its output, and then optionally keeps re-writing
 * pages (raising their generation) at a given rate so that a live
 * migration sees a working set. On SIGUSR1 it verifies every byte and
 * prints one line with the result; on SIGUSR2 it prints its status;
 * on SIGTERM it verifies once more and exits with the verdict.
 *
 * Lines it prints (stable, parsed by tests):
 *   memfill: filled X/N MiB
 *   memfill: ready N MiB pages=P seed=S
 *   memfill: verify OK N MiB pages=P dirtied=D ms=T
 *   memfill: verify FAILED page=I word=W expected=E got=G bad_pages=B
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096
#define WORDS_PER_PAGE (PAGE_SIZE / sizeof(uint64_t))

static volatile sig_atomic_t want_verify, want_status, want_exit;

static uint64_t *mem;
static uint32_t *gen;
static uint64_t npages, seed, dirtied;
static unsigned long mib;

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser: every input bit affects every output bit */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/*
 * The page's base value depends on the page index, its generation and
 * the seed, so a page placed at the wrong address, an old copy of a
 * page, or a zero page all fail; words differ within a page so a page
 * assembled from the wrong parts fails too.
 */
static inline uint64_t page_base(uint64_t page)
{
    return mix64(seed ^ (page << 20) ^ ((uint64_t)gen[page] << 52));
}

static inline uint64_t word_value(uint64_t base, uint64_t w)
{
    return base ^ (w * 0xd1b54a32d192ed03ULL);
}

static void write_page(uint64_t page)
{
    uint64_t *p = mem + page * WORDS_PER_PAGE;
    uint64_t base = page_base(page);

    for (uint64_t w = 0; w < WORDS_PER_PAGE; w++) {
        p[w] = word_value(base, w);
    }
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool verify(void)
{
    uint64_t bad = 0, first_page = 0, first_word = 0, exp0 = 0, got0 = 0;
    double t0 = now_ms();

    for (uint64_t page = 0; page < npages; page++) {
        const uint64_t *p = mem + page * WORDS_PER_PAGE;
        uint64_t base = page_base(page);

        for (uint64_t w = 0; w < WORDS_PER_PAGE; w++) {
            if (p[w] != word_value(base, w)) {
                if (!bad) {
                    first_page = page;
                    first_word = w;
                    exp0 = word_value(base, w);
                    got0 = p[w];
                }
                bad++;
                break;
            }
        }
    }
    if (bad) {
        printf("memfill: verify FAILED page=%" PRIu64 " word=%" PRIu64
               " expected=%016" PRIx64 " got=%016" PRIx64
               " bad_pages=%" PRIu64 "\n",
               first_page, first_word, exp0, got0, bad);
    } else {
        printf("memfill: verify OK %lu MiB pages=%" PRIu64
               " dirtied=%" PRIu64 " ms=%.0f\n",
               mib, npages, dirtied, now_ms() - t0);
    }
    fflush(stdout);
    return bad == 0;
}

static void on_signal(int sig)
{
    switch (sig) {
    case SIGUSR1:
        want_verify = 1;
        break;
    case SIGUSR2:
        want_status = 1;
        break;
    default:
        want_exit = 1;
        break;
    }
}

/* A whole decimal (or 0x hex) number, or exit: no silent garbage. */
static uint64_t parse_number(const char *arg)
{
    uint64_t v = 0;
    unsigned base = 10;
    const char *p = arg;

    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    if (!*p) {
        goto bad;
    }
    for (; *p; p++) {
        unsigned d;

        if (*p >= '0' && *p <= '9') {
            d = *p - '0';
        } else if (base == 16 && *p >= 'a' && *p <= 'f') {
            d = *p - 'a' + 10;
        } else if (base == 16 && *p >= 'A' && *p <= 'F') {
            d = *p - 'A' + 10;
        } else {
            goto bad;
        }
        if (v > (UINT64_MAX - d) / base) {
            goto bad;
        }
        v = v * base + d;
    }
    return v;
bad:
    fprintf(stderr, "memfill: '%s' is not a number\n", arg);
    exit(2);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: memfill -m MiB [-d MiB/s] [-s seed] [-p pidfile]\n"
            "  -m MiB     memory to fill\n"
            "  -d MiB/s   keep re-writing pages at this rate (0: idle)\n"
            "  -s seed    pattern seed (default: 1)\n"
            "  -p file    write the pid to file\n"
            "signals: USR1 verify, USR2 status, TERM verify and exit\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned long dirty_rate = 0;
    const char *pidfile = NULL;
    struct sigaction sa = { .sa_handler = on_signal };
    uint64_t rng = 0x853c49e6748fea9bULL;
    int opt;

    seed = 1;
    while ((opt = getopt(argc, argv, "m:d:s:p:")) != -1) {
        switch (opt) {
        case 'm':
            mib = parse_number(optarg);
            break;
        case 'd':
            dirty_rate = parse_number(optarg);
            break;
        case 's':
            seed = parse_number(optarg);
            break;
        case 'p':
            pidfile = optarg;
            break;
        default:
            usage();
        }
    }
    if (!mib) {
        usage();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    npages = (uint64_t)mib * (1024 * 1024 / PAGE_SIZE);
    mem = mmap(NULL, npages * PAGE_SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen = calloc(npages, sizeof(*gen));
    if (mem == MAP_FAILED || !gen) {
        printf("memfill: cannot allocate %lu MiB: %s\n", mib, strerror(errno));
        return 1;
    }
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (pidfile) {
        FILE *f = fopen(pidfile, "w");

        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        }
    }

    uint64_t step = npages / 8 ? npages / 8 : 1;
    for (uint64_t page = 0; page < npages; page++) {
        write_page(page);
        if ((page + 1) % step == 0 || page + 1 == npages) {
            printf("memfill: filled %" PRIu64 "/%lu MiB\n",
                   (page + 1) * PAGE_SIZE >> 20, mib);
        }
    }
    printf("memfill: ready %lu MiB pages=%" PRIu64 " seed=%" PRIu64 "\n",
           mib, npages, seed);

    /* Re-write pages in 1 MiB bursts, every 1/rate seconds. */
    const uint64_t burst = (1024 * 1024) / PAGE_SIZE;
    while (!want_exit) {
        if (want_verify) {
            want_verify = 0;
            verify();
        }
        if (want_status) {
            want_status = 0;
            printf("memfill: status %lu MiB pages=%" PRIu64
                   " dirtied=%" PRIu64 "\n", mib, npages, dirtied);
        }
        if (!dirty_rate) {
            pause();
            continue;
        }
        for (uint64_t i = 0; i < burst; i++) {
            /* xorshift: pages all over the area, not a sequential sweep */
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            uint64_t page = rng % npages;
            gen[page]++;
            write_page(page);
            dirtied++;
        }
        struct timespec ts = { 0, 1000000000L / dirty_rate };
        if (dirty_rate == 1) {
            ts = (struct timespec){ 1, 0 };
        }
        nanosleep(&ts, NULL);
    }
    return verify() ? 0 : 1;
}
