/* Replays a fuzz corpus through a harness without libFuzzer: every file in the given directories
 * (or the given files) is passed to LLVMFuzzerTestOneInput once. Used by the normal test run (and
 * the ASan build), so every input that ever crashed stays a regression test. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "otter/buf.h"
#include "otter/file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path, unsigned *count)
{
    struct ot_buf b;
    ot_buf_init(&b, 64 * 1024 * 1024);
    struct ot_diag d = {0};
    if (ot_file_read(path, &b, &d) != OT_OK) {
        fprintf(stderr, "replay: %s\n", d.msg);
        ot_buf_release(&b);
        return 1;
    }
    /* A private copy of exactly the file's size, so ASan sees reads past its end. */
    uint8_t *copy = malloc(b.len ? b.len : 1);
    if (!copy)
        return 1;
    if (b.len)
        memcpy(copy, b.data, b.len);
    LLVMFuzzerTestOneInput(copy, b.len);
    free(copy);
    ot_buf_release(&b);
    (*count)++;
    return 0;
}

static int run_path(const char *path, unsigned *count)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path, count);
    DIR *dir = opendir(path);
    if (!dir)
        return 1;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        rc |= run_path(p, count);
    }
    closedir(dir);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++)
        rc |= run_path(argv[i], &count);
    printf("replayed %u inputs\n", count);
    if (count == 0) {
        fprintf(stderr, "replay: empty corpus\n");
        return 1;
    }
    return rc;
}
