#!/usr/bin/python3
"""The verdict of the outage test (tests/e2e/outage.bats) from what its
run recorded: the moments of the faults, the answers wrk counted (the
summary files of tests/fault/*.lua) and the probes' lines
(tests/fault/probe.sh).

    report.py EVENTS VIOLATIONS NAME=WRK_OUT... -- NAME=PROBE_OUT...

EVENTS has lines "<event> <ms>" (wall clock) for start, redis_stop,
redis_back, pg_stop, pg_back and end; optionally redis_down, redis_start,
pg_down and pg_start. redis_back and pg_back are the moments the dependency
answered again (PING, pg_isready), from which recovery is timed.

Prints the summary (counts by status per phase, the 503s' window,
recovery times) and writes one line per broken rule to VIOLATIONS, each
starting with its kind: "status:", "socket:", "served:", "window:" or
"recovery:".

The rules, for every answer of the load and of the probes:
  - statuses: login, users/me, the gate and /health answer 200 (register
    201) or 503; 503 only with Retry-After and a problem+json body (the
    load scripts count one without as "503!");
  - wrk saw no connect, read, write or timeout error, and every probe got
    an answer;
  - served: each endpoint of the load had successes in every phase but
    PostgreSQL's outage (while Redis is away too);
  - window: a 503 only from the moment PostgreSQL was being stopped until
    RECOVERY_MS after it answered again; none while only Redis was away;
  - recovery: after each return every probed endpoint answers 200 (and
    /health "ok" after Redis's return) within RECOVERY_MS, from then on;
    and each endpoint of the load got a success within RECOVERY_MS of
    PostgreSQL's return.
"""

import sys

RECOVERY_MS = 2000
SLICE_MS = 100

OK = {"login": {"200"}, "register": {"201"}, "me": {"200"}, "gate": {"200"},
      "health": {"200"}}
SUCCESS = {"200", "201"}


def read_events(path):
    ev = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                ev[parts[0]] = int(parts[1])
    for need in ("start", "redis_stop", "redis_back", "pg_stop", "pg_back", "end"):
        if need not in ev:
            sys.exit("report.py: no %s event in %s" % (need, path))
    return ev


def read_wrk(path):
    """(summary dict, [(slice_ms, code, n)])"""
    summary, slices = None, []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "summary":
                summary = dict(p.split("=", 1) for p in parts[1:])
            elif parts and parts[0] == "slice":
                slices.append((int(parts[1]), parts[2], int(parts[3])))
    if summary is None:
        sys.exit("report.py: no summary line in %s (did wrk finish?)" % path)
    return summary, slices


def read_probe(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                rows.append((int(parts[0]), int(parts[1]), parts[2], parts[3]))
    return rows


def main(argv):
    if len(argv) < 3 or "--" not in argv:
        sys.exit(__doc__)
    sep = argv.index("--")
    ev = read_events(argv[0])
    viol_path = argv[1]
    wrk = {}
    for arg in argv[2:sep]:
        name, path = arg.split("=", 1)
        wrk[name] = read_wrk(path)
    probes = {}
    for arg in argv[sep + 1:]:
        name, path = arg.split("=", 1)
        probes[name] = read_probe(path)

    t0 = ev["start"]
    violations = []
    out = []

    def rel(ms):
        return "%.2f" % ((ms - t0) / 1000.0)

    phases = [
        ("before", ev["start"], ev["redis_stop"]),
        ("redis down", ev["redis_stop"], ev["redis_back"]),
        ("redis back", ev["redis_back"], ev["pg_stop"]),
        ("pg down", ev["pg_stop"], ev["pg_back"]),
        ("pg back", ev["pg_back"], ev["end"] + 60000),
    ]

    def phase_of(ms):
        for name, a, b in phases:
            if a <= ms < b:
                return name
        return "before" if ms < ev["start"] else "pg back"

    # A 503 may come from the moment PostgreSQL is being stopped until
    # RECOVERY_MS after it answers again.
    w_from, w_to = ev["pg_stop"], ev["pg_back"] + RECOVERY_MS

    out.append("timeline (s after the load started): Redis stopped at %s%s, started at %s, "
               "answered at %s; PostgreSQL stopped at %s%s, started at %s, accepted at %s; "
               "load ended at %s" % (
                   rel(ev["redis_stop"]),
                   " (gone at %s)" % rel(ev["redis_down"]) if "redis_down" in ev else "",
                   rel(ev.get("redis_start", ev["redis_back"])), rel(ev["redis_back"]),
                   rel(ev["pg_stop"]),
                   " (gone at %s)" % rel(ev["pg_down"]) if "pg_down" in ev else "",
                   rel(ev.get("pg_start", ev["pg_back"])), rel(ev["pg_back"]), rel(ev["end"])))

    # ---------------------------------------------------------- the load
    out.append("")
    out.append("answers of the load by phase (wrk; 503! = a 503 without Retry-After or problem+json):")
    codes_seen = sorted({c for _, (_, sl) in wrk.items() for _, c, _ in sl})
    hdr = "  %-9s %-11s" % ("endpoint", "phase") + "".join("%8s" % c for c in codes_seen)
    out.append(hdr)
    for name, (summary, slices) in wrk.items():
        per = {p[0]: {} for p in phases}
        for s, code, n in slices:
            ph = phase_of(s + SLICE_MS // 2)
            per[ph][code] = per[ph].get(code, 0) + n
        for ph, _, _ in phases:
            out.append("  %-9s %-11s" % (name, ph) +
                       "".join("%8d" % per[ph].get(c, 0) for c in codes_seen))
            if ph != "pg down" and not any(per[ph].get(c, 0) for c in OK[name]):
                violations.append("served: %s: no success in phase '%s' (%s)" % (
                    name, ph, ", ".join("%s=%d" % kv for kv in sorted(per[ph].items())) or "no answer at all"))
        errs = {k: int(summary.get(k, 0)) for k in ("connect", "read", "write", "timeout")}
        out.append("  %-9s %-11s requests=%s socket errors: %s" % (
            name, "all", summary.get("requests"), " ".join("%s=%d" % kv for kv in errs.items())))
        if any(errs.values()):
            violations.append("socket: %s: wrk counted %s" % (
                name, ", ".join("%d %s errors" % (v, k) for k, v in errs.items() if v)))

        allowed = OK[name] | {"503"}
        bad = {}
        for s, code, n in slices:
            if code not in allowed:
                bad.setdefault(code, []).append((s, n))
        for code, lst in sorted(bad.items()):
            violations.append("status: %s: %d answers %s (first in the slice at %s s, in phase '%s')" % (
                name, sum(n for _, n in lst), code, rel(lst[0][0]), phase_of(lst[0][0])))

        s503 = sorted(s for s, code, _ in slices if code.startswith("503"))
        if s503:
            first, last = s503[0], s503[-1]
            out.append("  %-9s 503s from the PostgreSQL stop %+d ms to its return %+d ms "
                       "(100 ms slices)" % (name, first - ev["pg_stop"],
                                            last + SLICE_MS - ev["pg_back"]))
        outside = [(s, n) for s, code, n in slices
                   if code.startswith("503") and not (s + SLICE_MS > w_from and s < w_to)]
        if outside:
            violations.append("window: %s: %d 503s outside the PostgreSQL outage, first in the slice "
                              "at %s s (phase '%s')" % (name, sum(n for _, n in outside),
                                                        rel(outside[0][0]), phase_of(outside[0][0])))
        if not s503:
            out.append("  %-9s no 503 at all" % name)
            continue
        # The first success after PostgreSQL's return.
        ok_after = sorted(s for s, code, _ in slices if code in SUCCESS and s + SLICE_MS > ev["pg_back"])
        if not ok_after:
            violations.append("recovery: %s: no success after PostgreSQL's return" % name)
        else:
            d = max(0, ok_after[0] + SLICE_MS - ev["pg_back"])
            out.append("  %-9s first success within %d ms of PostgreSQL's return" % (name, d))
            if ok_after[0] >= ev["pg_back"] + RECOVERY_MS:
                violations.append("recovery: %s: first success %d ms after PostgreSQL's return" % (name, d))

    # ---------------------------------------------------------- the probes
    out.append("")
    out.append("probes (one request every ~100 ms): answers by phase")
    for name, rows in probes.items():
        per = {p[0]: {} for p in phases}
        for sent, answered, code, field in rows:
            ph = phase_of(answered)
            key = code if name != "health" else "%s/%s" % (code, field)
            per[ph][key] = per[ph].get(key, 0) + 1
        out.append("  %-9s %s" % (name, "; ".join(
            "%s: %s" % (ph, " ".join("%s=%d" % kv for kv in sorted(per[ph].items())) or "-")
            for ph, _, _ in phases)))
        found = {"socket": [], "status": [], "window": []}
        for sent, answered, code, field in rows:
            if code == "000":
                found["socket"].append("no answer to the one sent at %s s" % rel(sent))
            elif code not in OK[name] | {"503"}:
                found["status"].append("%s at %s s (%s)" % (code, rel(answered), phase_of(answered)))
            elif code == "503" and not (answered > w_from and sent < w_to):
                found["window"].append("503 at %s s (%s)" % (rel(answered), phase_of(answered)))
        for kind, lst in found.items():
            if lst:
                violations.append("%s: probe %s: %d bad answers: %s%s" % (
                    kind, name, len(lst), "; ".join(lst[:5]), "; ..." if len(lst) > 5 else ""))

    # Recovery: from the dependency's return, how long until the endpoint
    # answers as it should and keeps doing so until the next fault.
    out.append("")
    out.append("recovery (ms from the dependency answering again until the endpoint answered "
               "well from then on; 0: it did at once, or before the test saw the return; "
               "'throughout': it never failed):")
    returns = [("redis", ev["redis_stop"], ev["redis_back"], ev["pg_stop"]),
               ("postgres", ev["pg_stop"], ev["pg_back"], ev["end"] + 60000)]
    for dep, down, back, nxt in returns:
        parts = []
        for name, rows in probes.items():
            def good(r):
                if r[2] not in OK[name]:
                    return False
                # After Redis's return /health must say "ok" again, not
                # "degraded".
                return not (name == "health" and dep == "redis" and r[3] != "ok")
            window = [r for r in rows if down <= r[1] < nxt]
            bad = [r for r in window if not good(r)]
            if not bad:
                parts.append("%s throughout" % name)
                continue
            last_bad = max(r[1] for r in bad)
            later = [r for r in window if r[1] > last_bad and good(r)]
            if not later:
                parts.append("%s never" % name)
                violations.append("recovery: probe %s: never answered well again after %s's return "
                                  "(last bad answer at %s s)" % (name, dep, rel(last_bad)))
                continue
            d = max(0, min(r[1] for r in later) - back)
            parts.append("%s %d" % (name, d))
            if d > RECOVERY_MS:
                violations.append("recovery: probe %s: %d ms after %s's return" % (name, d, dep))
        out.append("  after %-8s (answered again at %s s): %s" % (dep, rel(back), ", ".join(parts)))

    print("\n".join(out))
    with open(viol_path, "w") as f:
        for v in violations:
            f.write(v + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
