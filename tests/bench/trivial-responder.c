/* trivial-responder — the architecture's ceiling for benchmarks: a FastCGI
 * program that answers every request with a fixed 100-byte JSON body, and
 * every Authorizer request with a bare 200 (the trivial authorizer the gate
 * is measured against). */
#include <fcgiapp.h>
#include <string.h>

static const char body[] =
    "{\"status\":\"ok\",\"service\":\"authflow-bench\",\"note\":\"a fixed answer of exactly 100 bytes.............\"}";

int main(void)
{
    FCGX_Request r;
    FCGX_Init();
    FCGX_InitRequest(&r, 0, 0);
    while (FCGX_Accept_r(&r) >= 0) {
        const char *role = FCGX_GetParam("FCGI_ROLE", r.envp);
        if (role && !strcmp(role, "AUTHORIZER")) {
            FCGX_PutS("Status: 200 OK\r\n\r\n", r.out);
            FCGX_Finish_r(&r);
            continue;
        }
        FCGX_PutS("Status: 200 OK\r\nContent-Type: application/json\r\n\r\n", r.out);
        FCGX_PutStr(body, (int)strlen(body), r.out);
        FCGX_Finish_r(&r);
    }
    return 0;
}
