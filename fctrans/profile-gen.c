/*
 * fctrans: generating a guest kernel profile from a vmlinux image
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Kept apart from the profile reader so that QEMU, which only loads
 * profiles, links neither the BTF and ELF readers nor the decompressors.
 */
#include "profile.h"
#include "btf.h"
#include "kimage.h"
#include "ksymtab.h"

#include <inttypes.h>
#include <stdio.h>

#include <string.h>

/*
 * linux_banner is "Linux version <release> (<builder>) (<compiler>) #<n>
 * <flags> <date>\n".  Kernels link two such strings (init/version.c and
 * init/version-timestamp.c); the one with the build number "#<digit>" is
 * the one that is printed, and either serves to recognise the image.
 */
static bool find_banner(const FctransElf *elf, FctransProfile *p,
                        GError **errp)
{
    FctransElfSection ro;
    FctransBannerScan scan;
    unsigned hits = G_MAXUINT;
    const char *best = NULL, *b;
    size_t best_len = 0, n;
    bool best_numbered = false;

    if (!fctrans_elf_section(elf, ".rodata", &ro, errp)) {
        return false;
    }
    /* A banner in .rodata is a C string: its newline is followed by NUL. */
    fctrans_banner_scan_init(&scan, ro.data, ro.size, ro.size, &hits);
    while (fctrans_banner_scan_next(&scan, &b, &n)) {
        bool numbered;

        if ((const uint8_t *)b + n + 1 >= ro.data + ro.size || b[n + 1]) {
            continue;
        }
        numbered = fctrans_banner_numbered(b, n);
        if (!best || (numbered && !best_numbered)) {
            best = b;
            best_len = n;
            best_numbered = numbered;
        }
    }
    if (!best) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "no Linux version banner in .rodata");
        return false;
    }
    p->banner = g_strndup(best, best_len);
    p->banner_addr = ro.addr + ((const uint8_t *)best - ro.data);
    p->release = fctrans_banner_release(p->banner);
    if (!p->release) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "malformed version banner");
        return false;
    }
    return true;
}

static bool member_off(const FctransBtf *btf, uint32_t sid, const char *sname,
                       const char *path, uint64_t want_size, uint32_t *off,
                       GError **errp)
{
    FctransBtfMember m;

    if (!fctrans_btf_member(btf, sid, path, &m, errp)) {
        return false;
    }
    if (m.bit_size || m.bit_offset % 8 || m.byte_size != want_size) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "struct %s member %s: unexpected layout (bit offset %"
                    PRIu64 ", size %" PRIu64 ")", sname, path, m.bit_offset,
                    m.byte_size);
        return false;
    }
    *off = m.bit_offset / 8;
    return true;
}

/*
 * How PageBuddy() is encoded in page->page_type.  Kernels from 6.12 on
 * (enum pagetype) keep the type in the top byte and BTF carries the
 * enumerator's value.  From 4.18 to 6.8 a page type was a cleared bit
 * under PAGE_TYPE_BASE 0xf0000000, with PG_buddy 0x80; those values are
 * macros, absent from BTF, so they are known by version.  Anything else
 * (6.9 to 6.11 changed the base) is refused rather than guessed.
 */
static bool buddy_encoding(const FctransBtf *btf, FctransProfile *p,
                           GError **errp)
{
    unsigned major = 0, minor = 0;
    int64_t v;

    if (fctrans_btf_enum_value(btf, "PGTY_buddy", &v, NULL)) {
        if (v < 0 || v > 0xff) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                        "PGTY_buddy has an unexpected value %" PRId64, v);
            return false;
        }
        p->buddy_mask = 0xff000000;
        p->buddy_value = (uint32_t)v << 24;
        return true;
    }
    if (sscanf(p->release, "%u.%u", &major, &minor) != 2) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "cannot parse the kernel version '%s'", p->release);
        return false;
    }
    if ((major == 4 && minor >= 18) || major == 5 ||
        (major == 6 && minor <= 8)) {
        p->buddy_mask = 0xf0000080;
        p->buddy_value = 0xf0000000;
        return true;
    }
    g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                "kernel %s: unknown encoding of free pages (supported: "
                "4.18 to 6.8, and kernels whose BTF has PGTY_buddy)",
                p->release);
    return false;
}

FctransProfile *fctrans_profile_from_vmlinux(const void *data, size_t len,
                                             GError **errp)
{
    g_autoptr(FctransProfile) p = g_new0(FctransProfile, 1);
    g_autoptr(FctransElf) elf = NULL;
    g_autoptr(FctransKsymtab) ks = NULL;
    g_autoptr(FctransBtf) btf = NULL;
    FctransElfSection sec;
    FctransBtfMember m;
    uint32_t page_id, zone_id, norders;
    uint64_t size;

    elf = fctrans_elf_new(data, len, errp);
    if (!elf || !find_banner(elf, p, errp)) {
        return NULL;
    }
    if (!fctrans_elf_section(elf, ".text", &sec, errp)) {
        return NULL;
    }
    p->text_addr = sec.addr;

    ks = fctrans_ksymtab_new(elf, errp);
    if (!ks ||
        !fctrans_ksymtab_lookup(ks, "page_offset_base",
                                &p->page_offset_base_addr, errp) ||
        !fctrans_ksymtab_lookup(ks, "vmemmap_base", &p->vmemmap_base_addr,
                                errp) ||
        !fctrans_ksymtab_lookup(ks, "phys_base", &p->phys_base_addr, errp)) {
        g_prefix_error(errp, "kernel %s: ", p->release);
        return NULL;
    }

    if (!fctrans_elf_section(elf, ".BTF", &sec, errp)) {
        g_prefix_error(errp, "kernel %s (built without "
                       "CONFIG_DEBUG_INFO_BTF?): ", p->release);
        return NULL;
    }
    btf = fctrans_btf_new(sec.data, sec.size, errp);
    if (!btf ||
        !fctrans_btf_find(btf, "page", FCTRANS_BTF_KIND_STRUCT, &page_id,
                          errp) ||
        !fctrans_btf_type_size(btf, page_id, &size, errp) ||
        !member_off(btf, page_id, "page", "flags", 8, &p->page_flags_off,
                    errp) ||
        !member_off(btf, page_id, "page", "private", 8, &p->page_private_off,
                    errp) ||
        !member_off(btf, page_id, "page", "page_type", 4, &p->page_type_off,
                    errp) ||
        !fctrans_btf_find(btf, "zone", FCTRANS_BTF_KIND_STRUCT, &zone_id,
                          errp) ||
        !fctrans_btf_member(btf, zone_id, "free_area", &m, errp) ||
        !fctrans_btf_array_len(btf, m.type_id, &norders, errp) ||
        !buddy_encoding(btf, p, errp)) {
        g_prefix_error(errp, "kernel %s: ", p->release);
        return NULL;
    }
    if (size < 32 || size > FCTRANS_PROFILE_MAX_PAGE_SIZE || size % 8) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "kernel %s: struct page has an unexpected size %" PRIu64,
                    p->release, size);
        return NULL;
    }
    p->page_size = size;
    if (norders == 0 || norders > FCTRANS_PROFILE_MAX_ORDER + 1) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                    "kernel %s: unexpected number of orders %u", p->release,
                    norders);
        return NULL;
    }
    p->max_order = norders - 1;

    /*
     * What the generator writes, the reader must accept: check the
     * profile the way a reader will (member offsets inside struct page,
     * bounds of every field) so that a malformed image fails here.
     */
    {
        g_autofree char *text = fctrans_profile_to_text(p);
        g_autoptr(FctransProfile) q = NULL;

        q = fctrans_profile_parse(text, strlen(text), errp);
        if (!q) {
            g_prefix_error(errp, "kernel %s: ", p->release);
            return NULL;
        }
    }
    return g_steal_pointer(&p);
}
