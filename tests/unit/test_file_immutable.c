/*
 * The file-key decision (intercept/file_immutable.c): which facts make a
 * file's identity stand for its content. Facts are injected; then the facts
 * of a real file are read, made immutable where the filesystem and the
 * caller's capabilities allow (root on ext4), and read again.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../../intercept/file_immutable.h"
#include "check.h"

#define ATTR_IMMUTABLE 0x00000010ull
#define ATTR_VERITY 0x00100000ull

static SageFileTrust trust(SageFileFacts f) {
        return sage_file_trust(&f);
}

static void injected(void) {
        /* Nothing known, or an ordinary file on ext4/tmpfs/xfs/overlayfs/nfs. */
        CHECK(trust((SageFileFacts){ 0 }) == SAGE_FILE_MAY_CHANGE);
        CHECK(trust((SageFileFacts){ .statx_known = true,
                                     .statx_attributes_mask = ATTR_IMMUTABLE | ATTR_VERITY,
                                     .fs_known = true,
                                     .fs_type = 0xEF53 }) == SAGE_FILE_MAY_CHANGE);
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x01021994 }) == SAGE_FILE_MAY_CHANGE); /* tmpfs */
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x794c7630 }) == SAGE_FILE_MAY_CHANGE); /* overlay */
        /* fs-verity and the immutable attribute, as statx reports them. */
        CHECK(trust((SageFileFacts){ .statx_known = true,
                                     .statx_attributes = ATTR_VERITY,
                                     .statx_attributes_mask = ATTR_VERITY }) == SAGE_FILE_VERITY);
        CHECK(trust((SageFileFacts){ .statx_known = true,
                                     .statx_attributes = ATTR_IMMUTABLE,
                                     .statx_attributes_mask = ATTR_IMMUTABLE }) == SAGE_FILE_IMMUTABLE);
        /* An attribute bit the filesystem does not claim to report is no fact. */
        CHECK(trust((SageFileFacts){ .statx_known = true, .statx_attributes = ATTR_VERITY | ATTR_IMMUTABLE }) ==
              SAGE_FILE_MAY_CHANGE);
        /* FS_IOC_GETFLAGS where statx is silent. */
        CHECK(trust((SageFileFacts){ .flags_known = true, .inode_flags = FS_IMMUTABLE_FL }) == SAGE_FILE_IMMUTABLE);
        CHECK(trust((SageFileFacts){ .flags_known = true, .inode_flags = FS_APPEND_FL | FS_NOATIME_FL }) ==
              SAGE_FILE_MAY_CHANGE);
        /* Filesystems without a write path. */
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x73717368 }) == SAGE_FILE_READONLY_FS);
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = (int64_t)0xE0F5E1E2u }) == SAGE_FILE_READONLY_FS);
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x28cd3d45 }) == SAGE_FILE_READONLY_FS);
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x9660 }) == SAGE_FILE_READONLY_FS);
        /* f_type is a signed long on some ABIs: a sign-extended magic still matches. */
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = (int64_t)(int32_t)0xE0F5E1E2u }) ==
              SAGE_FILE_READONLY_FS);
        /* Values not in the table, even one bit away, are not proof. */
        CHECK(trust((SageFileFacts){ .fs_known = true, .fs_type = 0x73717369 }) == SAGE_FILE_MAY_CHANGE);
        CHECK(strcmp(sage_file_trust_name(SAGE_FILE_MAY_CHANGE), "may change") == 0);
}

static void real_file(void) {
        char path[] = "/tmp/sage-file-immutable-XXXXXX";
        int fd = mkstemp(path), flags = 0;
        SageFileFacts facts;

        CHECK(fd >= 0);
        CHECK(write(fd, "weights", 7) == 7);
        sage_file_facts_read(fd, &facts);
        CHECK(facts.statx_known && facts.fs_known);
        printf("%s: fs type 0x%llx, %s\n", path, (unsigned long long)facts.fs_type,
               sage_file_trust_name(sage_file_trust(&facts)));
        CHECK(sage_file_trust(&facts) == SAGE_FILE_MAY_CHANGE); /* a writable scratch file */
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
                int immutable = flags | FS_IMMUTABLE_FL;

                if (ioctl(fd, FS_IOC_SETFLAGS, &immutable) == 0) {
                        sage_file_facts_read(fd, &facts);
                        CHECK(sage_file_trust(&facts) == SAGE_FILE_IMMUTABLE);
                        CHECK(ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0);
                        printf("made immutable: read back as immutable\n");
                } else {
                        printf("cannot set the immutable attribute here (%s): injected facts only\n", strerror(errno));
                }
        }
        close(fd);
        CHECK(unlink(path) == 0);
}

int main(void) {
        injected();
        real_file();
        printf("file_immutable: ok\n");
        return 0;
}
