/*
 * Builders of synthetic kernel images for the unit tests and fuzzers:
 * BTF blobs, ELF64 images, a small vmlinux with the sections a profile
 * needs, bzImages and Debian packages around it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef TEST_KERNEL_IMAGE_H
#define TEST_KERNEL_IMAGE_H

#include "btf.h"
#include "kimage.h"

typedef struct BtfBuilder {
    GByteArray *types;
    GByteArray *strs;
    uint32_t next_id;
} BtfBuilder;

typedef struct BtfbMember {
    const char *name;           /* NULL: anonymous */
    uint32_t type;
    uint32_t bit_offset;
    uint32_t bitfield_size;     /* 0: not a bitfield */
} BtfbMember;

void btfb_init(BtfBuilder *b);
uint32_t btfb_str(BtfBuilder *b, const char *s);
uint32_t btfb_raw(BtfBuilder *b, const char *name, FctransBtfKind kind,
                  bool kind_flag, uint32_t vlen, uint32_t size_type,
                  const void *extra, size_t extra_len);
uint32_t btfb_int(BtfBuilder *b, const char *name, uint32_t size);
uint32_t btfb_ref(BtfBuilder *b, FctransBtfKind kind, const char *name,
                  uint32_t type);
uint32_t btfb_array(BtfBuilder *b, uint32_t elem, uint32_t index,
                    uint32_t nelems);
uint32_t btfb_struct(BtfBuilder *b, FctransBtfKind kind, const char *name,
                     uint32_t size, unsigned n, const BtfbMember *m);
uint32_t btfb_enum(BtfBuilder *b, const char *name, unsigned n,
                   const char *const *names, const int32_t *vals);
/* The blob; frees the builder's buffers. */
GBytes *btfb_finish(BtfBuilder *b);

/* BTF describing struct page and struct zone as Linux 6.1 (or 6.12). */
GBytes *test_kernel_btf(bool pgty_enum);

typedef struct ElfbSection {
    const char *name;
    uint64_t addr;
    const void *data;
    size_t size;
    uint32_t type;              /* 0: PROGBITS */
} ElfbSection;

GBytes *test_elf(unsigned n, const ElfbSection *secs);

/* Link-time addresses inside test_vmlinux(). */
#define TV_TEXT 0xffffffff81000000ULL
#define TV_RODATA 0xffffffff82000000ULL
#define TV_DATA 0xffffffff82a00000ULL
#define TV_PAGE_OFFSET_BASE (TV_DATA + 0x100)
#define TV_VMEMMAP_BASE (TV_DATA + 0x108)
#define TV_PHYS_BASE (TV_DATA + 0x110)
#define TV_BANNER_OFF 0x200
#define TV_RELEASE "6.1.0-99-amd64"
#define TV_BANNER "Linux version " TV_RELEASE " (test@example) (gcc 12) " \
                  "#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2026-01-01)"

/*
 * A vmlinux with .text, .rodata (holding the banner twice, the
 * unnumbered copy first, as Linux links them), __ksymtab,
 * __ksymtab_gpl, __ksymtab_strings, .data and .BTF.  @release replaces
 * TV_RELEASE in the banner when not NULL.
 */
GBytes *test_vmlinux(const char *release, bool pgty_enum, bool with_btf);

/* @data compressed in format @c (GZIP, XZ, LZMA or ZSTD). */
GBytes *test_compress(FctransCompression c, GBytes *data);

/* A bzImage whose payload is @vmlinux compressed with @c. */
GBytes *test_bzimage(GBytes *vmlinux, FctransCompression c);

/* A linux-image .deb holding ./boot/vmlinuz-@release = @vmlinuz. */
GBytes *test_deb(GBytes *vmlinuz, const char *release, FctransCompression c);

/* A .deb whose data.tar member is @tar compressed with @c (or NONE). */
GBytes *test_deb_tar(GBytes *tar, FctransCompression c);

/* Append a ustar header for an entry of @len bytes (data not appended). */
void test_tar_header(GByteArray *t, const char *name, char type,
                     uint64_t len);

#endif /* TEST_KERNEL_IMAGE_H */
