#!/usr/bin/env python3
"""unit-argv.py ROOT UNIT: the command that systemd would run for UNIT's
ExecStart= in the root file system ROOT, printed NUL-separated, ready for
`chroot ROOT "${argv[@]}"`.

It does what systemd does with the parts authflow's units use: the
specifiers %i and %%, Environment= and EnvironmentFile= (a leading "-":
optional; later assignments win, files after Environment=), "${VAR}" (one
word) and "$VAR" (split at whitespace) in ExecStart=, and User=/Group=,
NoNewPrivileges= and CapabilityBoundingSet= (through setpriv; the
namespace settings such as ProtectSystem= are not reproduced). The
environment starts empty except PATH, as under systemd. Unit files are looked up in /etc/systemd/system, then
/lib/systemd/system and /usr/lib/systemd/system; a template (name@.service)
serves its instances."""
import os
import re
import shlex
import sys

DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_unit(root, unit):
    names = [unit]
    m = re.fullmatch(r"([^@]+)@([^.]*)\.(\w+)", unit)
    if m:
        names.append("%s@.%s" % (m.group(1), m.group(3)))
    for d in DIRS:
        for n in names:
            p = os.path.join(root, d, n)
            if os.path.exists(p):
                return p, (m.group(2) if m else "")
    sys.exit("unit-argv: %s: no unit file under %s" % (unit, root))


def service_section(path):
    out, section = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                k, v = line.split("=", 1)
                out.append((k.strip(), v.strip()))
    return out


def specifiers(s, instance):
    return re.sub(r"%([i%])", lambda m: instance if m.group(1) == "i" else "%", s)


def read_env_file(root, name, env):
    optional = name.startswith("-")
    name = name.lstrip("-")
    try:
        with open(os.path.join(root, name.lstrip("/"))) as f:
            for line in f:
                line = line.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                env[k.strip()] = " ".join(shlex.split(v)) if v.strip() else ""
    except FileNotFoundError:
        if not optional:
            sys.exit("unit-argv: %s: missing environment file" % name)


def settings_get(settings, key):
    vals = [v for k, v in settings if k == key]
    return vals[-1] if vals else None


def main():
    root, unit = sys.argv[1], sys.argv[2]
    path, instance = find_unit(root, unit)
    settings = [(k, specifiers(v, instance)) for k, v in service_section(path)]
    env, files, user, group, execstart = {}, [], None, None, None
    for k, v in settings:
        if k == "Environment":
            for a in shlex.split(v):
                name, _, val = a.partition("=")
                env[name] = val
        elif k == "EnvironmentFile":
            files.append(v)
        elif k == "User":
            user = v
        elif k == "Group":
            group = v
        elif k == "ExecStart":
            execstart = v
    for f in files:
        read_env_file(root, f, env)
    if not execstart:
        sys.exit("unit-argv: %s: no ExecStart=" % unit)
    argv = []
    for word in shlex.split(execstart.lstrip("-@+!:")):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    cmd = ["env", "-i", "PATH=" + PATH] + ["%s=%s" % kv for kv in sorted(env.items())]
    # What setpriv can do of the unit's sandbox: the user, no new privileges,
    # the capability bounding set. (ProtectSystem=, PrivateTmp= and the
    # other namespace settings are not reproduced.)
    opts = []
    if user:
        opts += ["--reuid=" + user, "--regid=" + (group or user), "--init-groups"]
    if settings_get(settings, "NoNewPrivileges") in ("yes", "true", "on", "1"):
        opts.append("--no-new-privs")
    caps = settings_get(settings, "CapabilityBoundingSet")
    if caps is not None:
        keep = [c.lower().replace("cap_", "+", 1) for c in caps.split()]
        opts.append("--bounding-set=" + ",".join(["-all"] + keep))
    if opts:
        cmd += ["setpriv"] + opts
    sys.stdout.write("\0".join(cmd + argv) + "\0")


main()
