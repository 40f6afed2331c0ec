/* Path helpers. Names that come from artifacts or the network go through ot_name_is_safe before
 * they touch the file system. */
#ifndef OTTER_PATH_H
#define OTTER_PATH_H

#include "otter/err.h"

#define OT_NAME_MAX 64

/* A single, portable path component: 1..OT_NAME_MAX bytes of [A-Za-z0-9._+-], not starting with
 * '.' or '-' (so never ".", "..", a hidden file or an option). len excludes any terminator; a NUL
 * inside len makes the name unsafe. */
bool ot_name_is_safe(const char *name, size_t len);

/* Joins a directory and a name with one '/' into a new string (caller frees). */
enum ot_err ot_path_join(const char *dir, const char *name, char **ret) OT_MUST_CHECK;
/* The directory part of path ("." when none) as a new string (caller frees). */
enum ot_err ot_path_dirname(const char *path, char **ret) OT_MUST_CHECK;

#endif
