/* ot_client_err_for_status (client.h), apart from client.c so that otter-agent, which speaks
 * HTTP through its own client (src/agent/http.c), links it without libcurl. */
#include "otter/client.h"

enum ot_err ot_client_err_for_status(long status)
{
    switch (status) {
    case 401:
    case 403:
        return OT_ERR_PERM;
    case 404:
        return OT_ERR_NOENT;
    case 409:
        return OT_ERR_EXISTS;
    case 413:
        return OT_ERR_LIMIT;
    case 416:
        return OT_ERR_RANGE;
    default:
        return status >= 400 && status < 500 ? OT_ERR_INVALID : OT_ERR_IO;
    }
}
