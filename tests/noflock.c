/* An LD_PRELOAD shim, built by tests/test_lock.py with gcc: flock(2) on a file under the
 * directory $NOFLOCK_UNDER fails as on a filesystem without locking, NFS without lockd
 * (ENOLCK, the default) or Lustre mounted noflock ($NOFLOCK_ERRNO=ENOSYS or EOPNOTSUPP).
 * Every other flock is the real one. The file is recognised by the path the kernel gives for
 * the descriptor (/proc/self/fd/N), so symlinks count where they lead, as on a real mount.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int flock(int fd, int operation) {
    static int (*real_flock)(int, int);
    if (!real_flock) real_flock = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
    const char *under = getenv("NOFLOCK_UNDER");
    if (under && *under) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        size_t len = strlen(under);
        if (n > 0) {
            target[n] = '\0';
            if (strncmp(target, under, len) == 0 && (target[len] == '/' || target[len] == '\0')) {
                const char *name = getenv("NOFLOCK_ERRNO");
                errno = ENOLCK;
                if (name && strcmp(name, "ENOSYS") == 0) errno = ENOSYS;
                if (name && strcmp(name, "EOPNOTSUPP") == 0) errno = EOPNOTSUPP;
                return -1;
            }
        }
    }
    return real_flock(fd, operation);
}
