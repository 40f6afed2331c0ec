#include "otter/path.h"

bool ot_name_is_safe(const char *name, size_t len)
{
    if (!name || len == 0 || len > OT_NAME_MAX)
        return false;
    if (name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-' || c == '+';
        if (!ok)
            return false;
    }
    return true;
}

enum ot_err ot_path_join(const char *dir, const char *name, char **ret)
{
    size_t dl = strlen(dir), nl = strlen(name);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    bool slash = dl > 0 && !(dl == 1 && dir[0] == '/'); /* "" + "x" is "x", not "/x" */
    char *p = malloc(dl + slash + nl + 1);
    if (!p)
        return OT_ERR_NOMEM;
    memcpy(p, dir, dl);
    if (slash)
        p[dl] = '/';
    memcpy(p + dl + slash, name, nl + 1);
    *ret = p;
    return OT_OK;
}

enum ot_err ot_path_dirname(const char *path, char **ret)
{
    /* POSIX dirname(3) semantics without its static buffer: "a/b/" -> "a", "a//b" -> "a",
     * "/a" -> "/", "a" and "" -> ".". */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    while (n > 0 && path[n - 1] != '/')
        n--;
    while (n > 1 && path[n - 1] == '/')
        n--;
    char *p = n == 0 ? strdup(".") : strndup(path, n);
    if (!p)
        return OT_ERR_NOMEM;
    *ret = p;
    return OT_OK;
}
