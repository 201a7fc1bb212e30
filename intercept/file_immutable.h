/* Can a file's content change while SAGE holds a key made from its identity? (file_immutable.c) */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* What the kernel says about one open file; each part may be missing. */
typedef struct SageFileFacts {
        bool statx_known;
        uint64_t statx_attributes;      /* stx_attributes */
        uint64_t statx_attributes_mask; /* stx_attributes_mask: which of them the filesystem reports */
        bool flags_known;
        unsigned long inode_flags; /* FS_IOC_GETFLAGS */
        bool fs_known;
        int64_t fs_type; /* fstatfs f_type */
} SageFileFacts;

typedef enum SageFileTrust {
        SAGE_FILE_MAY_CHANGE = 0,
        SAGE_FILE_VERITY,      /* fs-verity: read-only for good, the kernel checks every page */
        SAGE_FILE_IMMUTABLE,   /* the immutable attribute (chattr +i) */
        SAGE_FILE_READONLY_FS, /* a filesystem that cannot write: squashfs, erofs, cramfs, iso9660 */
} SageFileTrust;

/* The decision, from facts alone (unit-tested with injected facts). */
SageFileTrust sage_file_trust(const SageFileFacts *facts);

/* The facts of open file `fd` (statx, FS_IOC_GETFLAGS, fstatfs); what fails stays unknown. */
void sage_file_facts_read(int fd, SageFileFacts *out);

/* A name for logs and tests. */
const char *sage_file_trust_name(SageFileTrust trust);
