/* libFuzzer harness for ot_manifest_parse. Beyond "no crash, no leak": a rejected input leaves the
 * result empty and a message without control characters; an accepted one formats, reparses and
 * reformats to the same bytes (the canonical form signatures depend on). */
#include "otter/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(const struct ot_diag *d)
{
    if (!memchr(d->msg, '\0', sizeof(d->msg)) || d->msg[0] == '\0' || d->err == OT_OK)
        abort();
    for (const char *p = d->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort(); /* untrusted bytes must not reach a log line raw */
}

static void check_rejected(const struct ot_manifest *m, const struct ot_diag *d)
{
    static const struct ot_manifest empty;
    if (memcmp(m, &empty, sizeof(empty)) != 0)
        abort();
    check_message(d);
}

static void format_or_abort(const struct ot_manifest *m, struct ot_buf *out)
{
    struct ot_diag d = {0};
    ot_buf_init(out, OT_MANIFEST_MAX);
    if (ot_manifest_validate(m, &d) != OT_OK || ot_manifest_format(m, out, &d) != OT_OK)
        abort();
}

/* The device-side decision must not crash on anything the parser accepts. */
static void exercise_queries(const struct ot_manifest *m)
{
    struct ot_kv provides[] = {{(char *)"bootloader.version", (char *)"2023.01"}};
    struct ot_diag d = {0};
    enum ot_err err = ot_manifest_check_device(m, m->device_types[0], provides, 1, 0, &d);
    if (err != OT_OK && err != OT_ERR_INCOMPATIBLE)
        abort();
    if (ot_manifest_check_device(m, "no-such-device", NULL, 0, 0, &d) != OT_ERR_INCOMPATIBLE)
        abort();
    for (size_t i = 0; i < m->npayloads; i++)
        if (ot_manifest_payload(m, m->payloads[i].name) != &m->payloads[i])
            abort();
    json_t *j = NULL;
    if (ot_manifest_to_json(m, &j) != OT_OK)
        abort();
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ot_manifest m, again;
    struct ot_diag d = {0};
    struct ot_buf first, second;
    if (ot_manifest_parse(data, size, &m, &d) != OT_OK) {
        check_rejected(&m, &d);
        return 0;
    }
    exercise_queries(&m);
    format_or_abort(&m, &first);
    if (ot_manifest_parse(first.data, first.len, &again, &d) != OT_OK)
        abort();
    format_or_abort(&again, &second);
    if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0)
        abort();
    ot_buf_release(&first);
    ot_buf_release(&second);
    ot_manifest_release(&again);
    ot_manifest_release(&m);
    return 0;
}
