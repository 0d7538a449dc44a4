/* fetch.c — outbound HTTP to OpenID providers (see fetch.h). */
#include "fetch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define MAX_URL 4096
/* A client id or secret is short; the bound keeps the encoded copies on
 * the stack, where they are wiped. */
#define MAX_CREDENTIAL 512

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;
/* A handle per thread: curl handles must not be shared between threads,
 * and a kept handle keeps its connections and TLS sessions. */
static _Thread_local CURL *handle;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ------------------------------------------------------------ URLs */

static bool loopback_host(const char *host)
{
    if (strcasecmp(host, "localhost") == 0)
        return true;
    /* curl has already turned the other IPv4 spellings (127.1, 0x7f.0.0.1,
     * 2130706433) into dotted quads, so what it connects to is what we see. */
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    size_t n = strlen(host);
    char v6[64];
    struct in6_addr a6;
    if (n < 3 || n - 2 >= sizeof v6 || host[0] != '[' || host[n - 1] != ']')
        return false;
    memcpy(v6, host + 1, n - 2);
    v6[n - 2] = '\0';
    return inet_pton(AF_INET6, v6, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* url parsed by curl when it may be fetched, else NULL; the transfer is
 * given this very handle, so the check and the connection cannot read the
 * URL differently. host_out (may be NULL) gets the host for messages. */
static CURLU *allowed_url(const char *url, char *host_out, size_t hostlen)
{
    if (!url || !*url || strlen(url) > MAX_URL)
        return NULL;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && *host &&
              (strcasecmp(scheme, "https") == 0 ||
               (strcasecmp(scheme, "http") == 0 && loopback_host(host)));
    if (ok && host_out)
        snprintf(host_out, hostlen, "%s", host);
    curl_free(scheme);
    curl_free(host);
    if (!ok) {
        curl_url_cleanup(u);
        return NULL;
    }
    return u;
}

bool af_fetch_url_allowed(const char *url)
{
    CURLU *u = allowed_url(url, NULL, 0);
    curl_url_cleanup(u);
    return u != NULL;
}

/* ------------------------------------------------------------ transfer */

struct sink {
    char *p;
    size_t len, cap, max;
    bool too_big, oom;
};

static size_t write_cb(char *data, size_t size, size_t nitems, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nitems;
    if (n > s->max - s->len) {
        s->too_big = true;
        return 0;
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = true;
            return 0;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
    return n;
}

/* RFC 6750's b64token: the token goes into a header line, so nothing else
 * (no CR, LF or space) may reach it. */
static bool b64token(const char *s)
{
    if (!*s)
        return false;
    for (; *s && *s != '='; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-._~+/", *s))
            return false;
    for (; *s == '='; s++)
        ;
    return *s == '\0';
}

int af_fetch(const struct af_fetch_req *rq, struct af_fetch_resp *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char host[256] = "";
    if (rq->timeout_ms <= 0 || rq->max_bytes == 0 || rq->max_bytes >= INT_MAX ||
        (rq->bearer && (rq->basic_user || rq->basic_password)) ||
        (!rq->basic_user != !rq->basic_password)) {
        snprintf(err, errlen, "fetch: bad request parameters");
        return -1;
    }
    if (rq->bearer && !b64token(rq->bearer)) {
        snprintf(err, errlen, "fetch: the bearer token is not an RFC 6750 b64token");
        return -1;
    }
    CURLU *u = allowed_url(rq->url, host, sizeof host);
    if (!u) {
        snprintf(err, errlen, "fetch: URL refused (https only, or http to a loopback host)");
        return -1;
    }
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK || (!handle && !(handle = curl_easy_init()))) {
        curl_url_cleanup(u);
        snprintf(err, errlen, "fetch: libcurl initialisation failed");
        return -1;
    }
    /* client_secret_basic: RFC 6749 §2.3.1 form-urlencodes id and secret
     * before they are joined with ':' and base64-encoded, so a ':' in the id
     * cannot move the split. Percent-encoding every reserved character
     * (space as %20, not '+') is a form encoding any decoder reads back. */
    char user[3 * MAX_CREDENTIAL + 1], pass[3 * MAX_CREDENTIAL + 1];
    if (rq->basic_user && (af_percent_encode(rq->basic_user, user, sizeof user) < 0 ||
                           af_percent_encode(rq->basic_password, pass, sizeof pass) < 0)) {
        curl_url_cleanup(u);
        snprintf(err, errlen, "fetch %s: client id or secret too long", host);
        return -1;
    }

    CURL *c = handle;
    char errbuf[CURL_ERROR_SIZE] = "";
    struct sink sink = {.max = rq->max_bytes};
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    /* No "Expect: 100-continue" wait before a form body. */
    struct curl_slist *h2 = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (h2 && rq->method == AF_FETCH_POST)
        h2 = curl_slist_append(h2, "Content-Type: application/x-www-form-urlencoded");
    if (!h2) {
        curl_slist_free_all(hdrs);
        curl_url_cleanup(u);
        sodium_memzero(user, sizeof user);
        sodium_memzero(pass, sizeof pass);
        snprintf(err, errlen, "fetch: out of memory");
        return -1;
    }

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_CURLU, u);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    /* A provider's 3xx is an answer, never a hop to somewhere the URL
     * check has not seen. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (rq->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, rq->ca_file);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, rq->timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "authflow");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    /* A declared length over the limit fails before the body is read;
     * write_cb enforces it on what actually arrives. */
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)rq->max_bytes);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    if (rq->method == AF_FETCH_POST) {
        const char *form = rq->form ? rq->form : "";
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(form));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (rq->bearer) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, rq->bearer);
    } else if (rq->basic_user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, pass);
    }
    sodium_memzero(user, sizeof user);
    sodium_memzero(pass, sizeof pass);

    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    char *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    if (rc == CURLE_OK && status > 0 && ctype && strlen(ctype) < sizeof out->content_type)
        strcpy(out->content_type, ctype);
    /* The handle forgets the credentials, the headers and the URL handle
     * now rather than at the next call. */
    curl_easy_reset(c);
    curl_slist_free_all(hdrs);
    curl_url_cleanup(u);

    if (rc != CURLE_OK || status <= 0 || sink.oom) {
        if (sink.too_big || rc == CURLE_FILESIZE_EXCEEDED)
            snprintf(err, errlen, "fetch %s: answer larger than %zu bytes", host, rq->max_bytes);
        else if (sink.oom)
            snprintf(err, errlen, "fetch %s: out of memory", host);
        else
            snprintf(err, errlen, "fetch %s: %s", host, *errbuf ? errbuf : curl_easy_strerror(rc));
        free(sink.p);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->status = status;
    out->body = sink.p ? sink.p : strdup("");
    out->len = sink.len;
    if (!out->body) {
        snprintf(err, errlen, "fetch %s: out of memory", host);
        memset(out, 0, sizeof *out);
        return -1;
    }
    return 0;
}

void af_fetch_resp_free(struct af_fetch_resp *r)
{
    if (!r)
        return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

void af_fetch_thread_cleanup(void)
{
    if (handle)
        curl_easy_cleanup(handle);
    handle = NULL;
}

/* ------------------------------------------------------------ JSON and forms */

json_object *af_fetch_resp_json(const struct af_fetch_resp *r)
{
    /* A NUL inside the body would hide the rest from the parser. */
    if (!r->body || r->len == 0 || r->len > INT_MAX || strlen(r->body) != r->len)
        return NULL;
    json_tokener *t = json_tokener_new();
    if (!t)
        return NULL;
    json_object *o = json_tokener_parse_ex(t, r->body, (int)r->len);
    bool whole = json_tokener_get_error(t) == json_tokener_success;
    for (size_t i = json_tokener_get_parse_end(t); whole && i < r->len; i++)
        whole = strchr(" \t\r\n", r->body[i]) != NULL;
    json_tokener_free(t);
    if (!o || !whole || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

json_object *af_fetch_json(const char *url, long timeout_ms, size_t max_bytes, char *err,
                           size_t errlen)
{
    struct af_fetch_req rq = {.method = AF_FETCH_GET, .url = url, .timeout_ms = timeout_ms,
                              .max_bytes = max_bytes};
    struct af_fetch_resp r;
    if (af_fetch(&rq, &r, err, errlen) < 0)
        return NULL;
    json_object *o = NULL;
    if (r.status != 200)
        snprintf(err, errlen, "fetch: status %ld", r.status);
    else if (!(o = af_fetch_resp_json(&r)))
        snprintf(err, errlen, "fetch: the answer is not a JSON object");
    af_fetch_resp_free(&r);
    return o;
}

char *af_form_encode(const char *const *pairs)
{
    size_t cap = 1;
    for (size_t i = 0; pairs[i]; i += 2)
        if (pairs[i + 1])
            cap += 3 * (strlen(pairs[i]) + strlen(pairs[i + 1])) + 2;
    char *s = malloc(cap), *p = s;
    if (!s)
        return NULL;
    *p = '\0';
    for (size_t i = 0; pairs[i]; i += 2) {
        if (!pairs[i + 1])
            continue;
        if (p != s)
            *p++ = '&';
        p += af_percent_encode(pairs[i], p, cap - (size_t)(p - s));
        *p++ = '=';
        p += af_percent_encode(pairs[i + 1], p, cap - (size_t)(p - s));
    }
    return s;
}
