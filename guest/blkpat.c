/*
 * blkpat: write and verify a generation-stamped pattern on a block device
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Runs inside the test guest (splitmem guest kit). The disk is cut into
 * slots of SLOT_BYTES; a slot holds a pattern that depends on the slot
 * number and a generation number, so a stale block, a block of another
 * slot or a zeroed block all fail the comparison. Every transfer uses
 * O_DIRECT (and writes O_SYNC), so each one is a request on the virtio
 * queue of the CPU it runs on, never the guest's page cache.
 *
 *   blkpat write DEV SLOT GEN    write the pattern, read it back, compare
 *   blkpat verify DEV SLOT GEN   read the slot, compare with the pattern
 *
 * One line on stdout, parsed by tests:
 *   blkpat: write|verify slot=S gen=G ok
 *   blkpat: write|verify slot=S gen=G FAILED off=O expected=E got=G
 *   blkpat: write|verify slot=S gen=G FAILED <what failed>: <errno text>
 * Exit status 0 when the slot holds the pattern.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT_BYTES (256 * 1024)
#define ALIGN 4096

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser, as memfill uses */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t word(uint64_t slot, uint64_t gen, uint64_t w)
{
    return mix64((gen << 40) ^ (slot << 24) ^ w);
}

static int fail(const char *op, uint64_t slot, uint64_t gen,
                const char *what)
{
    printf("blkpat: %s slot=%" PRIu64 " gen=%" PRIu64 " FAILED %s: %s\n",
           op, slot, gen, what, strerror(errno));
    return 1;
}

static int compare(const char *op, uint64_t slot, uint64_t gen,
                   const uint64_t *buf)
{
    for (uint64_t w = 0; w < SLOT_BYTES / 8; w++) {
        if (buf[w] != word(slot, gen, w)) {
            printf("blkpat: %s slot=%" PRIu64 " gen=%" PRIu64
                   " FAILED off=%" PRIu64 " expected=%016" PRIx64
                   " got=%016" PRIx64 "\n", op, slot, gen, w * 8,
                   word(slot, gen, w), buf[w]);
            return 1;
        }
    }
    printf("blkpat: %s slot=%" PRIu64 " gen=%" PRIu64 " ok\n", op, slot, gen);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t *buf, slot, gen;
    off_t off;
    int fd, writing;

    if (argc != 5 || (strcmp(argv[1], "write") && strcmp(argv[1], "verify"))) {
        fprintf(stderr, "usage: blkpat write|verify DEV SLOT GEN\n");
        return 2;
    }
    writing = !strcmp(argv[1], "write");
    if (sscanf(argv[3], "%" SCNu64, &slot) != 1 ||
        sscanf(argv[4], "%" SCNu64, &gen) != 1) {
        fprintf(stderr, "blkpat: SLOT and GEN are numbers\n");
        return 2;
    }
    off = (off_t)(slot * SLOT_BYTES);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (posix_memalign((void **)&buf, ALIGN, SLOT_BYTES)) {
        return fail(argv[1], slot, gen, "posix_memalign");
    }
    fd = open(argv[2], (writing ? O_RDWR | O_SYNC : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        return fail(argv[1], slot, gen, "open");
    }
    if (writing) {
        for (uint64_t w = 0; w < SLOT_BYTES / 8; w++) {
            buf[w] = word(slot, gen, w);
        }
        if (pwrite(fd, buf, SLOT_BYTES, off) != SLOT_BYTES) {
            return fail(argv[1], slot, gen, "pwrite");
        }
        /* The comparison must see what the disk returns, not our buffer. */
        memset(buf, 0, SLOT_BYTES);
    }
    if (pread(fd, buf, SLOT_BYTES, off) != SLOT_BYTES) {
        return fail(argv[1], slot, gen, "pread");
    }
    close(fd);
    return compare(argv[1], slot, gen, buf);
}
