/* echo-backend — a stand-in for an application behind authflow-gate: a
 * FastCGI responder answering, as JSON, the identity the web server passed
 * it (the gate's Variable- values, which reach a FastCGI responder as
 * X_AUTH_* variables) and the X-Auth-* headers as they arrived (HTTP_X_AUTH_*,
 * which must be the gate's values or absent, never the client's). Each
 * request is also appended to $ECHO_BACKEND_LOG, so a test can tell whether
 * a refused request ever reached the backend. Tests only. */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "X_AUTH_USER_ID", "X_AUTH_EMAIL", "X_AUTH_ROLES", "X_AUTH_SESSION_ID",
    "HTTP_X_AUTH_USER_ID", "HTTP_X_AUTH_EMAIL", "HTTP_X_AUTH_ROLES", "HTTP_X_AUTH_SESSION_ID",
    "X_REQUEST_ID", "HTTP_X_REQUEST_ID", "REQUEST_URI", "REQUEST_METHOD",
};

static void put_json_string(FCGX_Stream *out, const char *s)
{
    FCGX_PutChar('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            FCGX_FPrintF(out, "\\%c", c);
        else if (c < 0x20)
            FCGX_FPrintF(out, "\\u%04x", c);
        else
            FCGX_PutChar(c, out);
    }
    FCGX_PutChar('"', out);
}

int main(void)
{
    FCGX_Request r;
    if (FCGX_Init() != 0)
        return 1;
    FCGX_InitRequest(&r, 0, 0);
    const char *logpath = getenv("ECHO_BACKEND_LOG");
    while (FCGX_Accept_r(&r) >= 0) {
        FCGX_PutS("Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{", r.out);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *v = FCGX_GetParam(names[i], r.envp);
            if (i)
                FCGX_PutChar(',', r.out);
            put_json_string(r.out, names[i]);
            FCGX_PutChar(':', r.out);
            if (v)
                put_json_string(r.out, v);
            else
                FCGX_PutS("null", r.out);
        }
        FCGX_PutS("}\n", r.out);
        if (logpath) {
            FILE *f = fopen(logpath, "a");
            if (f) {
                const char *uri = FCGX_GetParam("REQUEST_URI", r.envp);
                fprintf(f, "%s\n", uri ? uri : "-");
                fclose(f);
            }
        }
        FCGX_Finish_r(&r);
    }
    return 0;
}
