#!/usr/bin/python3
"""smtp-sink.py — an SMTP server for the tests that stores what it is given.

    /usr/bin/python3 tests/smtp-sink.py --host 127.0.0.1 --port P --dir D
        [--pid-file F] [--reject-rcpt REGEX] [--tempfail-rcpt REGEX] [--delay-ms N]

Each accepted message is stored as D/<seq>.eml (seq zero-padded to 6 digits,
one more than the highest one already in D, so a restarted sink carries on),
the raw bytes as received after dot-unstuffing (CRLF line ends, no header
added). The file is written under a temporary name (starting with a dot) and
then renamed, so a reader never sees half a message. After the rename one
line per recipient is appended to D/index.tsv and flushed:

    <seq>.eml TAB <rcpt> TAB <Message-ID header value, or "-">

--reject-rcpt: a RCPT TO matching REGEX (re.search, case-insensitive) gets
"550 5.1.1 no such user"; --tempfail-rcpt: "451 4.3.0 try again later".
--delay-ms: the answer to the end of DATA comes this much later (the message
is stored first: the client that gives up waiting does not know whether it
was delivered, as with a real server).

Many messages per connection (MAIL/RCPT/DATA/RSET cycles) are fine; no
STARTTLS, no AUTH. Writes its pid to --pid-file once it listens; exits 0 on
SIGTERM or SIGINT (removing the pid file if it still names this process).
Logs one line per message to stderr: never the content, which holds codes
and links.

Needs Debian's python3-aiosmtpd (run it with /usr/bin/python3).
"""

import argparse
import asyncio
import email.parser
import email.policy
import os
import re
import signal
import sys
import time

from aiosmtpd.smtp import SMTP

SEQ_RE = re.compile(r"^([0-9]{6,})\.eml$")


def log(msg):
    sys.stderr.write("%s smtp-sink[%d]: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), msg))
    sys.stderr.flush()


def one_line(s):
    """A value fit for one TSV field."""
    return re.sub(r"[\t\r\n]+", " ", s).strip()


class Store:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        highest = 0
        for name in os.listdir(directory):
            m = SEQ_RE.match(name)
            if m:
                highest = max(highest, int(m.group(1)))
        self.next_seq = highest + 1
        self.index = open(os.path.join(directory, "index.tsv"), "a", encoding="utf-8",
                          errors="surrogateescape")

    def save(self, raw, rcpts):
        """Stores one message. Synchronous on purpose: the event loop runs
        no other callback (and no signal handler) in between, so the
        numbering, the file and its index lines stay consistent."""
        seq = self.next_seq
        self.next_seq += 1
        name = "%06d.eml" % seq
        tmp = os.path.join(self.dir, ".%s.%d.tmp" % (name, os.getpid()))
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
        os.rename(tmp, os.path.join(self.dir, name))
        msgid = message_id(raw)
        for rcpt in rcpts:
            self.index.write("%s\t%s\t%s\n" % (name, one_line(rcpt), msgid))
        self.index.flush()
        return name, msgid


def message_id(raw):
    try:
        headers = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            raw, headersonly=True)
        v = headers.get("Message-ID")
    except Exception:  # a broken message is still stored
        v = None
    if v is None:
        return "-"
    v = one_line(str(v))
    return v or "-"


class Handler:
    def __init__(self, store, reject, tempfail, delay):
        self.store = store
        self.reject = reject
        self.tempfail = tempfail
        self.delay = delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject is not None and self.reject.search(address):
            log("RCPT %s refused (550)" % one_line(address))
            return "550 5.1.1 no such user"
        if self.tempfail is not None and self.tempfail.search(address):
            log("RCPT %s deferred (451)" % one_line(address))
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        name, msgid = self.store.save(envelope.original_content, envelope.rcpt_tos)
        log("stored %s from %s to %s message-id %s (%d bytes)" % (
            name, one_line(envelope.mail_from or ""), ",".join(map(one_line, envelope.rcpt_tos)),
            msgid, len(envelope.original_content)))
        if self.delay > 0:
            await asyncio.sleep(self.delay / 1000.0)
        return "250 2.0.0 OK queued as %s" % name


def write_pid_file(path):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, path)


def remove_pid_file(path):
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


def regex(s):
    try:
        return re.compile(s, re.IGNORECASE)
    except re.error as e:
        raise argparse.ArgumentTypeError("bad regex %r: %s" % (s, e))


def main():
    ap = argparse.ArgumentParser(description="Store every message received over SMTP.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--pid-file")
    ap.add_argument("--reject-rcpt", type=regex)
    ap.add_argument("--tempfail-rcpt", type=regex)
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args()

    store = Store(args.dir)
    handler = Handler(store, args.reject_rcpt, args.tempfail_rcpt, max(0, args.delay_ms))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        # hostname given: aiosmtpd would otherwise call getfqdn(), which
        # may wait on DNS.
        return SMTP(handler, hostname="smtp-sink.localhost", ident="authflow test sink",
                    enable_SMTPUTF8=True, decode_data=False, timeout=120, loop=loop)

    try:
        server = loop.run_until_complete(loop.create_server(factory, host=args.host, port=args.port))
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (args.host, args.port, e))
        return 1

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pid_file:
        write_pid_file(args.pid_file)
    log("listening on %s:%d, storing in %s (next %06d)" % (args.host, args.port, args.dir, store.next_seq))

    loop.run_until_complete(stop.wait())
    server.close()
    if args.pid_file:
        remove_pid_file(args.pid_file)
    store.index.close()
    log("stopped")
    # Open connections die with the process.
    return 0


if __name__ == "__main__":
    sys.exit(main())
