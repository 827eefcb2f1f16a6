/*
 * fctrans: guest kernel profiles
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The text format is line based: "key value", '#' starts a comment line.
 * The first line is "fctrans-profile <format>".  Every key is required
 * and may appear once; unknown keys are refused, since a profile that
 * says something this reader does not understand must not be half-used.
 */
#include "profile.h"

#include <glib/gstdio.h>
#include <inttypes.h>

#include <errno.h>
#include <string.h>

/* A profile file is a few hundred bytes; refuse anything huge. */
#define MAX_PROFILE_FILE (64 * 1024)

void fctrans_profile_free(FctransProfile *p)
{
    if (p) {
        g_free(p->release);
        g_free(p->banner);
        g_free(p);
    }
}

char *fctrans_banner_release(const char *banner)
{
    const char *r, *end;

    if (!g_str_has_prefix(banner, FCTRANS_BANNER_PREFIX)) {
        return NULL;
    }
    r = banner + strlen(FCTRANS_BANNER_PREFIX);
    for (end = r; *end && !g_ascii_isspace(*end); end++) {
        continue;
    }
    return end > r ? g_strndup(r, end - r) : NULL;
}

/*
 * memmem() in windows: the same single pass, but a checker that looks at
 * the whole haystack on every call (AddressSanitizer's memmem) stays
 * linear too.
 */
#define BANNER_SCAN_WINDOW (64 * 1024)

static const uint8_t *find_prefix(const uint8_t *p, const uint8_t *limit)
{
    const size_t plen = strlen(FCTRANS_BANNER_PREFIX);

    while (p < limit && (size_t)(limit - p) >= plen) {
        size_t n = MIN((size_t)(limit - p), BANNER_SCAN_WINDOW);
        const uint8_t *hit = memmem(p, n, FCTRANS_BANNER_PREFIX, plen);

        if (hit || p + n == limit) {
            return hit;
        }
        /* A prefix may straddle the window's end. */
        p += n - (plen - 1);
    }
    return NULL;
}

void fctrans_banner_scan_init(FctransBannerScan *s, const void *buf,
                              size_t len, size_t limit, unsigned *hits_left)
{
    s->end = (const uint8_t *)buf + len;
    s->limit = (const uint8_t *)buf + MIN(limit, len);
    s->next = buf;
    s->np = buf;
    s->hits_left = hits_left;
}

bool fctrans_banner_scan_next(FctransBannerScan *s, const char **banner,
                              size_t *len)
{
    const uint8_t *hit;

    while (*s->hits_left && (hit = find_prefix(s->next, s->limit))) {
        (*s->hits_left)--;
        if (s->np < hit) {
            s->np = hit;
        }
        while (s->np < s->end && g_ascii_isprint(*s->np)) {
            s->np++;
        }
        if (s->np == s->end) {
            /* No hit from here on ends in a newline. */
            return false;
        }
        if (*s->np != '\n') {
            /* No hit before np does. */
            s->next = s->np + 1;
            continue;
        }
        if ((size_t)(s->np - hit) > FCTRANS_PROFILE_MAX_BANNER) {
            /* Hits this far from the newline are too long. */
            s->next = s->np - FCTRANS_PROFILE_MAX_BANNER;
            continue;
        }
        s->next = s->np + 1;
        *banner = (const char *)hit;
        *len = s->np - hit;
        return true;
    }
    return false;
}

bool fctrans_banner_numbered(const char *b, size_t len)
{
    const char *h = g_strstr_len(b, len, " #");

    return h && h + 2 < b + len && g_ascii_isdigit(h[2]);
}

/* ---------------------------------------------------------------------- */
/* Text form */

char *fctrans_profile_to_text(const FctransProfile *p)
{
    g_autofree char *banner = g_strescape(p->banner, NULL);

    return g_strdup_printf(
        "fctrans-profile %d\n"
        "# Guest kernel profile for splitmem's free-memory introspection.\n"
        "# Generated from the kernel image by fctrans-profile.\n"
        "release %s\n"
        "banner %s\n"
        "banner-address 0x%" PRIx64 "\n"
        "text-address 0x%" PRIx64 "\n"
        "page-offset-base-address 0x%" PRIx64 "\n"
        "vmemmap-base-address 0x%" PRIx64 "\n"
        "phys-base-address 0x%" PRIx64 "\n"
        "page-size %u\n"
        "page-flags-offset %u\n"
        "page-private-offset %u\n"
        "page-type-offset %u\n"
        "buddy-mask 0x%08x\n"
        "buddy-value 0x%08x\n"
        "max-order %u\n",
        FCTRANS_PROFILE_FORMAT, p->release, banner, p->banner_addr,
        p->text_addr, p->page_offset_base_addr, p->vmemmap_base_addr,
        p->phys_base_addr, p->page_size, p->page_flags_off,
        p->page_private_off, p->page_type_off, p->buddy_mask,
        p->buddy_value, p->max_order);
}

char *fctrans_profile_file_name(const FctransProfile *p)
{
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                         p->banner, -1);

    return g_strdup_printf("%s-%.8s%s", p->release, sum,
                           FCTRANS_PROFILE_SUFFIX);
}

typedef enum {
    KEY_STR,
    KEY_ESCAPED,
    KEY_U64,
    KEY_U32,
} KeyType;

typedef struct KeyDesc {
    const char *name;
    KeyType type;
    size_t offset;
    uint64_t max;
} KeyDesc;

#define KEY(n, t, f, m) { n, t, offsetof(FctransProfile, f), m }

static const KeyDesc keys[] = {
    KEY("release", KEY_STR, release, 0),
    KEY("banner", KEY_ESCAPED, banner, 0),
    KEY("banner-address", KEY_U64, banner_addr, UINT64_MAX),
    KEY("text-address", KEY_U64, text_addr, UINT64_MAX),
    KEY("page-offset-base-address", KEY_U64, page_offset_base_addr,
        UINT64_MAX),
    KEY("vmemmap-base-address", KEY_U64, vmemmap_base_addr, UINT64_MAX),
    KEY("phys-base-address", KEY_U64, phys_base_addr, UINT64_MAX),
    KEY("page-size", KEY_U32, page_size, FCTRANS_PROFILE_MAX_PAGE_SIZE),
    KEY("page-flags-offset", KEY_U32, page_flags_off,
        FCTRANS_PROFILE_MAX_PAGE_SIZE - 8),
    KEY("page-private-offset", KEY_U32, page_private_off,
        FCTRANS_PROFILE_MAX_PAGE_SIZE - 8),
    KEY("page-type-offset", KEY_U32, page_type_off,
        FCTRANS_PROFILE_MAX_PAGE_SIZE - 4),
    KEY("buddy-mask", KEY_U32, buddy_mask, UINT32_MAX),
    KEY("buddy-value", KEY_U32, buddy_value, UINT32_MAX),
    KEY("max-order", KEY_U32, max_order, FCTRANS_PROFILE_MAX_ORDER),
};

static bool parse_value(const KeyDesc *k, const char *val, FctransProfile *p,
                        unsigned line, GError **errp)
{
    void *field = (char *)p + k->offset;
    uint64_t v;
    char *end;

    switch (k->type) {
    case KEY_STR:
        if (!*val || strchr(val, ' ')) {
            break;
        }
        *(char **)field = g_strdup(val);
        return true;
    case KEY_ESCAPED: {
        g_autofree char *s = g_strcompress(val);

        if (!*s || strlen(s) > FCTRANS_PROFILE_MAX_BANNER) {
            break;
        }
        *(char **)field = g_steal_pointer(&s);
        return true;
    }
    case KEY_U64:
    case KEY_U32:
        if (!g_ascii_isdigit(*val)) {
            break;
        }
        errno = 0;
        v = g_ascii_strtoull(val, &end, 0);
        if (errno || *end || v > k->max) {
            break;
        }
        if (k->type == KEY_U64) {
            *(uint64_t *)field = v;
        } else {
            *(uint32_t *)field = v;
        }
        return true;
    }
    g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                "line %u: bad value for '%s'", line, k->name);
    return false;
}

static bool profile_check(const FctransProfile *p, GError **errp)
{
    g_autofree char *rel = fctrans_banner_release(p->banner);
    const char *why = NULL;

    if (!rel || strcmp(rel, p->release) != 0) {
        why = "the banner does not name the release";
    } else if (p->page_size < 32 || p->page_size % 8) {
        why = "bad page-size";
    } else if (p->page_flags_off + 8 > p->page_size ||
               p->page_private_off + 8 > p->page_size ||
               p->page_type_off + 4 > p->page_size) {
        why = "a struct page member lies outside struct page";
    } else if (!p->buddy_mask || (p->buddy_value & ~p->buddy_mask)) {
        why = "bad buddy-mask/buddy-value";
    } else if (p->banner_addr < p->text_addr) {
        why = "banner-address lies below text-address";
    }
    if (why) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "inconsistent profile: %s", why);
        return false;
    }
    return true;
}

FctransProfile *fctrans_profile_parse(const char *text, size_t len,
                                      GError **errp)
{
    g_autoptr(FctransProfile) p = g_new0(FctransProfile, 1);
    g_autofree char *copy = NULL;
    g_auto(GStrv) lines = NULL;
    bool seen[G_N_ELEMENTS(keys)] = { false };
    bool header = false;
    unsigned i, k;

    if (len > MAX_PROFILE_FILE) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "profile too large");
        return NULL;
    }
    if (memchr(text, '\0', len)) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "profile contains a NUL byte");
        return NULL;
    }
    copy = g_strndup(text, len);
    lines = g_strsplit(copy, "\n", 0);
    for (i = 0; lines[i]; i++) {
        char *line = lines[i];
        char *sp;

        g_strchomp(line);
        if (!*line || line[0] == '#') {
            continue;
        }
        sp = strchr(line, ' ');
        if (!sp) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "line %u: expected 'key value'", i + 1);
            return NULL;
        }
        *sp++ = '\0';
        if (!header) {
            if (strcmp(line, "fctrans-profile") != 0) {
                g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                            "not an fctrans profile");
                return NULL;
            }
            if (strcmp(sp, G_STRINGIFY(FCTRANS_PROFILE_FORMAT)) != 0) {
                g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED,
                            "profile format '%s' (this reader knows %d)", sp,
                            FCTRANS_PROFILE_FORMAT);
                return NULL;
            }
            header = true;
            continue;
        }
        for (k = 0; k < G_N_ELEMENTS(keys); k++) {
            if (strcmp(keys[k].name, line) == 0) {
                break;
            }
        }
        if (k == G_N_ELEMENTS(keys)) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "line %u: unknown key '%s'", i + 1, line);
            return NULL;
        }
        if (seen[k]) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "line %u: '%s' given twice", i + 1, line);
            return NULL;
        }
        seen[k] = true;
        if (!parse_value(&keys[k], sp, p, i + 1, errp)) {
            return NULL;
        }
    }
    if (!header) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "not an fctrans profile");
        return NULL;
    }
    for (k = 0; k < G_N_ELEMENTS(keys); k++) {
        if (!seen[k]) {
            g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                        "'%s' is missing", keys[k].name);
            return NULL;
        }
    }
    if (!profile_check(p, errp)) {
        return NULL;
    }
    return g_steal_pointer(&p);
}

FctransProfile *fctrans_profile_load(const char *path, GError **errp)
{
    g_autofree char *text = NULL;
    gsize len;
    FctransProfile *p;
    GStatBuf st;

    if (g_stat(path, &st) == 0 && st.st_size > MAX_PROFILE_FILE) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "%s: too large for a profile", path);
        return NULL;
    }
    if (!g_file_get_contents(path, &text, &len, errp)) {
        return NULL;
    }
    p = fctrans_profile_parse(text, len, errp);
    if (!p) {
        g_prefix_error(errp, "%s: ", path);
    }
    return p;
}

static gint cmp_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

GPtrArray *fctrans_profile_load_path(const char *path, GError **errp)
{
    g_autoptr(GPtrArray) out =
        g_ptr_array_new_with_free_func((GDestroyNotify)fctrans_profile_free);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GDir) dir = NULL;
    const char *name;
    unsigned i;

    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        FctransProfile *p = fctrans_profile_load(path, errp);

        if (!p) {
            return NULL;
        }
        g_ptr_array_add(out, p);
        return g_steal_pointer(&out);
    }
    dir = g_dir_open(path, 0, errp);
    if (!dir) {
        return NULL;
    }
    while ((name = g_dir_read_name(dir))) {
        if (g_str_has_suffix(name, FCTRANS_PROFILE_SUFFIX)) {
            g_ptr_array_add(names, g_build_filename(path, name, NULL));
        }
    }
    /* A stable order, so that reports name profiles deterministically. */
    g_ptr_array_sort(names, cmp_names);
    for (i = 0; i < names->len; i++) {
        FctransProfile *p = fctrans_profile_load(names->pdata[i], errp);

        if (!p) {
            return NULL;
        }
        g_ptr_array_add(out, p);
    }
    return g_steal_pointer(&out);
}
