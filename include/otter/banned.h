/* Functions that are too easy to misuse: using one is a build error (git's banned.h).
 * Use snprintf, ot_buf, memcpy with an explicit length, and ot_parse_* instead. */
#ifndef OTTER_BANNED_H
#define OTTER_BANNED_H

#define OT_BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) OT_BANNED(strcpy)
#undef strcat
#define strcat(x, y) OT_BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) OT_BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) OT_BANNED(strncat)
#undef sprintf
#define sprintf(...) OT_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) OT_BANNED(vsprintf)
#undef gets
#define gets(x) OT_BANNED(gets)
#undef atoi
#define atoi(x) OT_BANNED(atoi)
#undef atol
#define atol(x) OT_BANNED(atol)
#undef atoll
#define atoll(x) OT_BANNED(atoll)
#undef strtok
#define strtok(x, y) OT_BANNED(strtok)

#endif
