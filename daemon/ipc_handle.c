/*
 * What IPC_EXPORT may register: only what an importer can use is worth an
 * fd of the broker's, a CUDA shareable handle. A socket must never be held
 * (the client's own connection, exported, would never see EOF: a zombie
 * holding a connection slot for good), nor a pipe, a directory or an O_PATH
 * fd. With a driver the handle is imported, checked to be the announced
 * size on the announced device, and released again (gpu_check_handle: the
 * checks PUBLISH's adoption makes, without the copy); without one only the
 * file type can be checked.
 */
#include "ipc_handle.h"

#include <fcntl.h>
#include <sys/stat.h>

int ipc_handle_check(Gpu *gpu, int fd, const SageIpcAllocation *a, const char **why) {
        struct stat st;
        int flags = fcntl(fd, F_GETFL), r;

        if (flags < 0 || (flags & O_PATH) || fstat(fd, &st) < 0 || S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode) ||
            S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) {
                *why = "not a CUDA shareable handle (a socket, pipe or directory)";
                return SAGE_ERR_BAD_FD;
        }
        if (!gpu)
                return 0;
        r = gpu_check_handle(gpu, a->device, fd, a->size);
        if (r == 0)
                return 0;
        if (r == SAGE_ERR_SIZE_MISMATCH || r == SAGE_ERR_BAD_DEVICE) {
                *why = "the handle is not the announced size on the announced device";
                return r;
        }
        *why = "the driver does not take it for a CUDA shareable handle";
        return SAGE_ERR_BAD_FD;
}
