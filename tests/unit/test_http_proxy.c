/* The agent HTTP client's proxy rules (src/agent/http.c): which proxy URLs it takes
 * (ag_http_proxy_check) and which URLs skip the proxy (ag_http_proxy_skip: loopback, and the
 * no_proxy list as curl reads it). The wire side, tunnels and credentials through a fake proxy,
 * is in tests/server/test_agent_proxy.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "http.h"

static void test_proxy_urls(void **state)
{
    (void)state;
    static const char *const good[] = {
        "http://proxy.example.com:3128",
        "http://proxy.example.com:3128/",
        "HTTP://proxy.example.com",
        "proxy.example.com:8080", /* no scheme: http, as curl takes it */
        "http://10.0.0.1:3128",
        "http://[fd00::1]:3128",
        "http://user:secret@proxy:3128",
        "http://user@proxy:3128",
        "http://us%40er:p%3Ass%25w@proxy:3128", /* escaped '@', ':' and '%' */
        "http://user:p@ss@proxy:3128",          /* the last '@' ends the user info */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct ot_diag d = {0};
        if (ag_http_proxy_check(good[i], &d) != OT_OK)
            fail_msg("%s: %s", good[i], d.msg);
    }
    static const struct {
        const char *proxy, *why;
    } bad[] = {
        {"socks5://proxy:1080", "only http://"},
        {"https://proxy:3128", "only http://"},
        {"http://proxy:3128/path", "without a path"},
        {"http://proxy:3128?x=1", "without a path"},
        {"http://proxy:0", "port"},
        {"http://proxy:65536", "port"},
        {"http://proxy:31x8", "port"},
        {"http://:3128", "host"},
        {"http://", "host"},
        {"http://[fd00::1:3128", "IPv6"},
        {"http://pro xy:3128", "printable"},
        {"http://us%4:pw@proxy", "user name or password"},
        {"http://us%0a:pw@proxy", "user name or password"},
        {"http://a%3Ab:pw@proxy", "user name or password"}, /* a ':' in the user name */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ot_diag d = {0};
        if (ag_http_proxy_check(bad[i].proxy, &d) == OT_OK)
            fail_msg("%s: taken", bad[i].proxy);
        if (!strstr(d.msg, bad[i].why))
            fail_msg("%s: '%s' does not say '%s'", bad[i].proxy, d.msg, bad[i].why);
    }
}

static void test_no_proxy(void **state)
{
    (void)state;
    static const struct {
        const char *url, *no_proxy;
        bool skip;
    } cases[] = {
        /* loopback never goes through a proxy */
        {"https://127.0.0.1:8443/x", NULL, true},
        {"https://127.1.2.3/x", NULL, true},
        {"http://[::1]:80/", NULL, true},
        {"https://localhost:8443", NULL, true},
        {"https://LocalHost", "", true},
        /* nothing listed */
        {"https://updates.example.com", NULL, false},
        {"https://updates.example.com", "", false},
        {"https://updates.example.com", " , ,", false},
        /* names: the name and its sub-domains, never a mere suffix of a label */
        {"https://updates.example.com", "example.com", true},
        {"https://updates.example.com", ".example.com", true},
        {"https://example.com", ".example.com", true},
        {"https://updates.EXAMPLE.com", "example.COM", true},
        {"https://updates.example.com.", "example.com", true},
        {"https://badexample.com", "example.com", false},
        {"https://example.com.evil.net", "example.com", false},
        {"https://updates.example.com", "other.org, example.com", true},
        {"https://updates.example.com", "other.org\texample.com", true},
        {"https://updates.example.com", "other.org,updates.example.com:8443", true},
        {"https://updates.example.com", "*", true},
        {"https://updates.example.com", "*.example.com", false}, /* not a pattern language */
        /* addresses and networks */
        {"https://10.1.2.3", "10.1.2.3", true},
        {"https://10.1.2.3", "10.1.2.4", false},
        {"https://10.1.2.3", "10.1.2.3:8443", true},
        {"https://10.1.2.3", "2.3", false}, /* an address has no domains */
        {"https://10.1.2.3:8443/a", "10.0.0.0/8", true},
        {"https://11.1.2.3", "10.0.0.0/8", false},
        {"https://192.168.7.200", "192.168.7.128/25", true},
        {"https://192.168.7.100", "192.168.7.128/25", false},
        {"https://[fd00::5]:8443", "fd00::/8", true},
        {"https://[fe80::5]", "fd00::/8", false},
        {"https://[fd00::5]", "[fd00::5]", true},
        {"https://10.1.2.3", "fd00::/8", false},
        {"https://10.1.2.3", "0.0.0.0/0", true},
        {"https://10.1.2.3", "10.0.0.0/33", false}, /* not a network: a name, matching nothing */
        /* not a URL: skipped (the client refuses it anyway) */
        {"ftp://x", NULL, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (ag_http_proxy_skip(cases[i].url, cases[i].no_proxy) != cases[i].skip)
            fail_msg("%s with no_proxy '%s': expected %s", cases[i].url,
                     cases[i].no_proxy ? cases[i].no_proxy : "(none)",
                     cases[i].skip ? "skip" : "the proxy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_urls),
        cmocka_unit_test(test_no_proxy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
