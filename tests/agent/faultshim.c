/* LD_PRELOAD fault injection for the agent's power-cut torture test: fails one write, pwrite,
 * fsync or fdatasync call on a regular file, chosen by the environment:
 *
 *     OTTER_FAULT=write:7:ENOSPC     the 7th write(2) to a regular file fails with ENOSPC
 *     OTTER_FAULT=pwrite:3:EIO       the 3rd pwrite(2) to a regular file fails with EIO
 *     OTTER_FAULT=write:2:short      the 2nd write to a regular file writes only half
 *     OTTER_FAULT=fsync:4:EIO        the 4th fsync/fdatasync fails with EIO
 *
 * Sockets, pipes and terminals pass untouched (the network and the log are not the subject), and
 * only one call fails: what the agent must survive is one fault, then a retry or a restart. */
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_int counter;
static char op[16];
static int nth = -1;
static int err_no;
static int short_write;

__attribute__((constructor)) static void init(void)
{
    const char *s = getenv("OTTER_FAULT");
    char e[32];
    if (!s || sscanf(s, "%15[a-z]:%d:%31s", op, &nth, e) != 3)
        return;
    if (strcmp(e, "short") == 0)
        short_write = 1;
    else if (strcmp(e, "ENOSPC") == 0)
        err_no = ENOSPC;
    else if (strcmp(e, "EIO") == 0)
        err_no = EIO;
    else if (strcmp(e, "EDQUOT") == 0)
        err_no = EDQUOT;
    else
        err_no = EIO;
}

static int is_file(int fd)
{
    struct stat st;
    return fd > 2 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Whether this call (of kind k) is the one to fail. */
static int hit(const char *k, int fd)
{
    if (nth < 0 || strcmp(op, k) != 0 || !is_file(fd))
        return 0;
    return atomic_fetch_add(&counter, 1) + 1 == nth;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (hit("write", fd)) {
        if (short_write && n > 1)
            return real(fd, buf, n / 2);
        errno = err_no ? err_no : EIO;
        return -1;
    }
    return real(fd, buf, n);
}

/* With _FILE_OFFSET_BITS=64 (the build's) this defines pwrite64, which the agent calls. */
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    if (hit("pwrite", fd)) {
        if (short_write && n > 1)
            return real(fd, buf, n / 2, off);
        errno = err_no ? err_no : EIO;
        return -1;
    }
    return real(fd, buf, n, off);
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (hit("fsync", fd)) {
        errno = err_no ? err_no : EIO;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (hit("fsync", fd)) {
        errno = err_no ? err_no : EIO;
        return -1;
    }
    return real(fd);
}
