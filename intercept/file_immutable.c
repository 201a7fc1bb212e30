/*
 * Whether a file may change under a key made from its identity. A file key
 * (device, inode, size, mtime, ctime, range; share_key.c) saves hashing the
 * bytes, but identity is no proof of content: a file updated in place
 * through a MAP_SHARED mapping (numpy.memmap, a trainer writing already
 * dirty pages) keeps its size, mtime and ctime, and tmpfs never updates the
 * times for mapped writes at all. So identity may stand for content only
 * where the kernel guarantees the content cannot change:
 *
 * - fs-verity (STATX_ATTR_VERITY): no writer can exist, every page read is
 *   checked against the Merkle tree;
 * - the immutable attribute (STATX_ATTR_IMMUTABLE, or FS_IMMUTABLE_FL from
 *   FS_IOC_GETFLAGS where statx does not report it): no write, no truncate;
 *   clearing it changes ctime, which is part of the key;
 * - a filesystem that has no write path at all: squashfs, erofs, cramfs,
 *   iso9660 (fstatfs f_type).
 *
 * Not proof, on purpose: the read-only mount flag (ST_RDONLY), which a
 * read-only bind mount sets while the host keeps writing the same inode
 * through another mount; overlayfs, whose upper layer is writable; file
 * permissions. Every other file is keyed by its content.
 */
#include "file_immutable.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#ifndef STATX_ATTR_IMMUTABLE
#define STATX_ATTR_IMMUTABLE 0x00000010
#endif
#ifndef STATX_ATTR_VERITY
#define STATX_ATTR_VERITY 0x00100000
#endif

/* f_type of filesystems without a write path (linux/magic.h). */
static const int64_t readonly_fs_types[] = {
        0x73717368, /* SQUASHFS_MAGIC */
        0xE0F5E1E2, /* EROFS_SUPER_MAGIC_V1 */
        0x28cd3d45, /* CRAMFS_MAGIC */
        0x453dcd28, /* CRAMFS_MAGIC_WEND */
        0x9660,     /* ISOFS_SUPER_MAGIC */
};

SageFileTrust sage_file_trust(const SageFileFacts *f) {
        if (f->statx_known) {
                uint64_t reported = f->statx_attributes & f->statx_attributes_mask;

                if (reported & STATX_ATTR_VERITY)
                        return SAGE_FILE_VERITY;
                if (reported & STATX_ATTR_IMMUTABLE)
                        return SAGE_FILE_IMMUTABLE;
        }
        if (f->flags_known && (f->inode_flags & FS_IMMUTABLE_FL))
                return SAGE_FILE_IMMUTABLE;
        if (f->fs_known)
                for (size_t i = 0; i < sizeof(readonly_fs_types) / sizeof(readonly_fs_types[0]); i++)
                        if ((uint32_t)f->fs_type == (uint32_t)readonly_fs_types[i])
                                return SAGE_FILE_READONLY_FS;
        return SAGE_FILE_MAY_CHANGE;
}

void sage_file_facts_read(int fd, SageFileFacts *out) {
        struct statx stx;
        struct statfs sfs;
        int flags = 0;

        *out = (SageFileFacts){ 0 };
        if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS, &stx) == 0) {
                out->statx_known = true;
                out->statx_attributes = stx.stx_attributes;
                out->statx_attributes_mask = stx.stx_attributes_mask;
        }
        /* The ioctl's argument is an int, whatever its prototype says. */
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
                out->flags_known = true;
                out->inode_flags = (unsigned long)(unsigned)flags;
        }
        if (fstatfs(fd, &sfs) == 0) {
                out->fs_known = true;
                out->fs_type = (int64_t)sfs.f_type;
        }
}

const char *sage_file_trust_name(SageFileTrust trust) {
        switch (trust) {
        case SAGE_FILE_VERITY: return "verity";
        case SAGE_FILE_IMMUTABLE: return "immutable";
        case SAGE_FILE_READONLY_FS: return "read-only filesystem";
        case SAGE_FILE_MAY_CHANGE: break;
        }
        return "may change";
}
