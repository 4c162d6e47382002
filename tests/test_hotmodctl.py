#!/usr/bin/env python3
"""hotmodctl end to end (CTest: hotmodctl_e2e).

usage: test_hotmodctl.py HOTMODCTL CTL_HOST MODULE_DIR [MINISIGN]

Starts ctl_host (a host serving its control socket) on a copy of square_v1.so, then drives it
with hotmodctl and parses what it prints: status (the table), status --json (parsed here),
reload from another file, a refused reload, rollback, events (--count, while a reload runs),
metrics (scraped and parsed as the Prometheus text format), the exit statuses, and queued
mode (a second host whose reloads wait for its poll). With MINISIGN (given when hotmod has
libsodium), a third host trusts a key made by minisign (HOTMOD_TRUSTED_KEYS) and status
names the signing key and trusted comment of its builds. Every wait has a deadline.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CTL, HOST, MODS = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
MINISIGN = sys.argv[4] if len(sys.argv) > 4 else None
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def ctl(sock, *args, timeout=60):
    p = subprocess.run([CTL, "--socket", sock] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def start_host(work, name, queued=False, env=None, placed=False):
    """placed: the module file (work/NAME.so) is in place already (signed, say)."""
    sock = os.path.join(work, name + ".sock")
    mod = os.path.join(work, name + ".so")
    if not placed:
        shutil.copy(os.path.join(MODS, "square_v1.so"), mod)
    logpath = os.path.join(work, name + ".log")
    # The host appends to its log through a descriptor of its own; the test reads it through
    # another (a shared file offset would let the test's reads move the host's writes).
    with open(logpath, "a") as out:
        argv = [HOST, sock, mod] + (["queued"] if queued else [])
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **(env or {})))
    log = open(logpath)
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        if "ready" in log.read():
            return proc, sock, log
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    log.seek(0)
    sys.exit("ctl_host did not start: " + log.read())


def stop_host(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -1


def parse_metrics(text):
    """The Prometheus text format: {(name, labels): value}, every family typed."""
    types, samples = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        m = re.match(r"# TYPE (\w+) (counter|gauge)$", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        if line.startswith("# HELP "):
            continue
        m = re.match(r'(\w+)(?:\{((?:\w+="(?:[^"\\]|\\.)*",?)*)\})? (-?\d+(?:\.\d+)?)$', line)
        if not m:
            raise ValueError("not a sample line: %r" % line)
        if m.group(1) not in types:
            raise ValueError("sample before its TYPE: %r" % line)
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def sign(sec, so, comment):
    subprocess.run([MINISIGN, "-S", "-s", sec, "-m", so, "-t", comment], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def signed_host(work, procs, logs):
    """A host trusting a key made by minisign: status names its builds' key and comment."""
    pub, sec = os.path.join(work, "k.pub"), os.path.join(work, "k.sec")
    subprocess.run([MINISIGN, "-G", "-W", "-p", pub, "-s", sec], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(pub) as f:
        key_id = f.readline().split()[-1]  # "untrusted comment: minisign public key ID"
    mod = os.path.join(work, "signed.so")
    shutil.copy(os.path.join(MODS, "square_v1.so"), mod)
    sign(sec, mod, "build 7 from CI")
    proc, sock, log = start_host(work, "signed", env={"HOTMOD_TRUSTED_KEYS": pub}, placed=True)
    procs.append(proc)
    logs.append(log)

    rc, out, err = ctl(sock, "status", "--json")
    m = json.loads(out)["modules"][0]
    check(rc == 0 and m["signed"] == {"key_id": key_id, "comment": "build 7 from CI"},
          "signed: status --json names the key and the trusted comment (%r)" % m.get("signed"))
    check(m["versions"][0]["note"] == "build 7 from CI", "signed: the current version's note")
    rc, out, err = ctl(sock, "status")
    check(re.search(r"^  signed +by key %s: build 7 from CI$" % key_id, out, re.M) is not None,
          "signed: the status table's signed line")

    # An unsigned build is refused, and the signed one serves on.
    unsigned = os.path.join(work, "unsigned", "signed.so")
    os.mkdir(os.path.dirname(unsigned), 0o700)
    shutil.copy(os.path.join(MODS, "square_v2.so"), unsigned)
    rc, out, err = ctl(sock, "reload", "square", unsigned)
    check(rc == 1 and "HM_EUNTRUSTED" in err, "signed: an unsigned build is refused (%r)" % err)
    m = json.loads(ctl(sock, "status", "--json")[1])["modules"][0]
    check(m["version"] == 1 and m["signed"]["comment"] == "build 7 from CI" and
          m["last_error"].startswith("HM_EUNTRUSTED: "), "signed: v1 serves on, refusal shown")

    # A comment with what JSON must escape comes back as it was signed.
    odd = 'build 8 "rc\\1"\tfrom CI \u00e9'
    rel = os.path.join(work, "rel8", "signed.so")
    os.mkdir(os.path.dirname(rel), 0o700)
    shutil.copy(os.path.join(MODS, "square_v2.so"), rel)
    sign(sec, rel, odd)
    rc, out, err = ctl(sock, "reload", "square", rel)
    check(rc == 0, "signed: a signed build loads (%r)" % err)
    m = json.loads(ctl(sock, "status", "--json")[1])["modules"][0]
    check(m["version"] == 2 and m["signed"] == {"key_id": key_id, "comment": odd},
          "signed: the comment survives JSON escaping (%r)" % m.get("signed"))
    check([v["note"] for v in m["versions"]] == [odd, "build 7 from CI"],
          "signed: each version's note is its comment (%r)" % [v["note"] for v in m["versions"]])


def main():
    work = tempfile.mkdtemp(prefix="hotmodctl-")
    os.chmod(work, 0o700)
    procs, logs = [], []
    try:
        proc, sock, log = start_host(work, "host")
        procs.append(proc)
        logs.append(log)
        v2 = os.path.join(MODS, "square_v2.so")

        rc, out, err = ctl(sock, "status")
        check(rc == 0 and re.search(r"^square\s+v1 \(build 1\)\s+immediate", out, re.M) is not None,
              "status: a table with square at v1 (rc %d)" % rc)
        check("current" in out, "status: v1 is current")

        # events while a reload runs: the stream must show the reload's events.
        ev = subprocess.Popen([CTL, "--socket", sock, "events", "--count", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:  # until the stream is registered
            _, js, _ = ctl(sock, "status", "--json")
            if json.loads(js)["control"]["streams"] == 1:
                break
            time.sleep(0.01)
        rc, out, err = ctl(sock, "reload", "square", v2)
        check(rc == 0 and "version 2 is current" in out, "reload from another file: rc 0, v2")
        # The host prints a version when its live call returns another one: it must have seen
        # v2 before the rollback below, or it would see 1 throughout and print nothing.
        deadline = time.time() + 10
        while time.time() < deadline:
            log.seek(0)
            if "version 2 (module version 2)" in log.read():
                break
            time.sleep(0.01)
        evout, everr = ev.communicate(timeout=30)
        lines = evout.splitlines()
        check(ev.returncode == 0 and len(lines) == 2, "events --count 2: two lines, rc 0 (%r)" % lines)
        check(len(lines) == 2 and re.search(r" loaded square v2$", lines[0]) is not None and
              re.search(r" retired square v1$", lines[1]) is not None,
              "events: loaded v2, then retired v1")

        rc, out, err = ctl(sock, "reload", "square", os.path.join(work, "nope.so"))
        check(rc == 1 and "HM_ENOENT" in err, "a refused reload: rc 1, the error's name (%r)" % err)
        rc, out, err = ctl(sock, "reload", "nosuchmodule")
        check(rc == 1 and "HM_ENOMOD" in err, "an unknown module: rc 1, HM_ENOMOD")

        rc, out, err = ctl(sock, "status", "--json")
        st = json.loads(out)
        m = st["modules"][0]
        check(rc == 0 and st["pid"] == proc.pid and m["name"] == "square", "status --json parses")
        check(m["version"] == 2 and m["reloads"] == 1 and m["rejects"] == 1 and
              m["rollbacks"] == 0, "status --json: version 2, 1 reload, 1 reject")
        check(m["path"] == v2 and m["reload_mode"] == "immediate", "status --json: path, mode")
        check(m["last_error"].startswith("HM_ENOENT: ") and "nope.so" in m["last_error"],
              "status --json: the last refusal")
        check([v["version"] for v in m["versions"]][0] == 2 and
              m["versions"][0]["why"] == "current", "status --json: v2 current")
        check(any(v["why"].startswith("kept for rollback") for v in m["versions"]),
              "status --json: v1's copy kept for rollback")
        check(m["signed"] is None and all(v["note"] == "" for v in m["versions"]),
              "status --json: no signature without trusted keys")

        rc, out, err = ctl(sock, "rollback", "square")
        check(rc == 0 and "version 3 is current" in out, "rollback: rc 0, version 3")
        deadline = time.time() + 10
        while time.time() < deadline:
            log.seek(0)
            if "version 1 (module version 3)" in log.read():
                break
            time.sleep(0.01)
        log.seek(0)
        check("version 1 (module version 3)" in log.read(), "the host's live call runs build 1 again")
        rc, out, err = ctl(sock, "rollback", "square")
        check(rc == 1 and "HM_ENOPREV" in err, "a second rollback: HM_ENOPREV")

        rc, out, err = ctl(sock, "metrics")
        samples = parse_metrics(out)
        lab = (("module", "square"),)
        check(rc == 0 and samples.get(("hotmod_module_version", lab)) == 3, "metrics: version 3")
        check(samples.get(("hotmod_reloads_total", lab)) == 1 and
              samples.get(("hotmod_rejects_total", lab)) == 1 and
              samples.get(("hotmod_rollbacks_total", lab)) == 1,
              "metrics: 1 reload, 1 reject, 1 rollback (HM_ENOPREV and HM_ENOMOD refuse no build)")
        check(samples.get(("hotmod_versions_mapped", lab), 0) >= 1, "metrics: versions mapped")

        # Exit statuses of usage and connection errors.
        rc, _, _ = ctl(sock, "frobnicate")
        check(rc == 2, "an unknown command: rc 2")
        rc, _, _ = ctl(os.path.join(work, "absent.sock"), "status")
        check(rc == 2, "no socket there: rc 2")

        # Queued mode: the reload is prepared, and published by the host's poll only.
        qproc, qsock, qlog = start_host(work, "queued", queued=True)
        procs.append(qproc)
        logs.append(qlog)
        rc, out, err = ctl(qsock, "reload", "square", v2)
        check(rc == 3 and "queued" in out, "queued mode: reload exits 3 (%d: %s%s)" % (rc, out, err))
        deadline = time.time() + 10
        while time.time() < deadline:
            qlog.seek(0)
            if "version 2 (module version 2)" in qlog.read():
                break
            time.sleep(0.01)
        qlog.seek(0)
        check("version 2 (module version 2)" in qlog.read(), "queued mode: the poll published it")
        rc, out, err = ctl(qsock, "rollback", "square")
        check(rc == 3, "queued mode: rollback exits 3")
        deadline = time.time() + 10
        while time.time() < deadline:
            _, js, _ = ctl(qsock, "status", "--json")
            if json.loads(js)["modules"][0]["version"] == 3:
                break
            time.sleep(0.01)
        check(json.loads(js)["modules"][0]["rollbacks"] == 1, "queued mode: the rollback applied")

        if MINISIGN:
            signed_host(work, procs, logs)
        else:
            print("skip signed builds: no minisign, or hotmod without libsodium")

        for p in procs:
            check(stop_host(p) == 0, "the host stops cleanly")
        procs = []
        check(not os.path.exists(sock) and not os.path.exists(qsock), "the sockets are removed")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for f in logs:
            f.close()
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
