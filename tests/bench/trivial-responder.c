/* trivial-responder — the architecture's ceiling for benchmarks: a FastCGI
 * program that answers every request with a fixed 100-byte JSON body. */
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
        FCGX_PutS("Status: 200 OK\r\nContent-Type: application/json\r\n\r\n", r.out);
        FCGX_PutStr(body, (int)strlen(body), r.out);
        FCGX_Finish_r(&r);
    }
    return 0;
}
