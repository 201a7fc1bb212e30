#!/usr/bin/env python3
"""saged's Prometheus endpoint (--metrics-listen) against the simulated driver.

  metrics_checks.py MODE SAGED SAGECTL SHARE_TEST

MODE promtool:   a client publishes; the page shows it and passes `promtool check metrics`.
MODE hostile:    slowloris, an oversized head, garbage, 1000 connections, bad
                 methods and paths: each gets its answer, and the broker keeps
                 serving its socket clients (sagectl ping) meanwhile.
MODE prometheus: a real Prometheus scrapes saged; its HTTP API reports the
                 publishes the test caused.
MODE refuse:     non-loopback addresses are refused unless --metrics-listen-any.
promtool/prometheus missing: exit 77 (skipped) with the reason.
"""
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

mode, saged, sagectl, share_test = sys.argv[1:5]
tmp = tempfile.mkdtemp(prefix="sage-metrics-")
sock = os.path.join(tmp, "saged.sock")
procs = []
failures = []


def bad(what):
    print("FAIL:", what)
    failures.append(what)


T0 = time.monotonic()


def step(what):
    print(f"== [{time.monotonic() - T0:.1f} s]", what, flush=True)


def start_saged(*extra):
    log = open(os.path.join(tmp, "saged.log"), "w+")
    p = subprocess.Popen([saged, "--socket", sock, "--foreground", "-v", *extra], stderr=log)
    procs.append(p)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log.seek(0)
        m = re.search(r"metrics: http://([0-9.]+):(\d+)/metrics", log.read())
        if m and os.path.exists(sock):
            return p, m.group(1), int(m.group(2))
        if p.poll() is not None:
            break
        time.sleep(0.05)
    log.seek(0)
    sys.exit("saged did not come up:\n" + log.read())


def ping(timeout=5):
    """The broker's socket clients are served: sagectl ping answers in time."""
    t = time.monotonic()
    r = subprocess.run([sagectl, "--socket", sock, "--timeout", "2000", "ping"], capture_output=True, timeout=timeout)
    return r.returncode == 0, time.monotonic() - t


def http(port, raw, timeout=10):
    """Send raw bytes, return everything the server sends until it hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        return r.read().decode()


def value(page, name, labels=""):
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", page, re.M)
    return float(m.group(1)) if m else None


def publish(tag):
    """share-test under libsage: its upload misses and is published at free."""
    env = dict(os.environ, LD_PRELOAD=os.environ["SAGE_TEST_PRELOAD"], SAGE_SHARE="1", SAGE_SOCKET=sock)
    subprocess.run([share_test, "8", tag], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)


def need(tool, without):
    """The tool's path; skipped (77), saying why, where it is not installed."""
    path = shutil.which(tool)
    if not path:
        print(f"SKIP: {tool} not installed (Debian: apt-get install prometheus); {without}")
        sys.exit(77)
    return path


def check_promtool():
    promtool = need("promtool", "the page is not linted")
    _, _, port = start_saged("--metrics-listen", "127.0.0.1:0")
    step("an empty broker's page passes promtool")
    page = scrape(port)
    lint = subprocess.run([promtool, "check", "metrics"], input=page.encode(), capture_output=True)
    if lint.returncode != 0:
        bad("promtool check metrics (empty): " + (lint.stdout + lint.stderr).decode())
    step("a client publishes; the page counts it, per device and per namespace")
    publish("7")
    time.sleep(0.15)  # the page is reused for 100 ms (METRICS_HTTP_PAGE_REUSE_NS): past it, a fresh rendering
    page = scrape(port)
    lint = subprocess.run([promtool, "check", "metrics"], input=page.encode(), capture_output=True)
    if lint.returncode != 0:
        bad("promtool check metrics: " + (lint.stdout + lint.stderr).decode())
    if value(page, "sage_publishes_total") != 1:
        bad("sage_publishes_total is not 1:\n" + page)
    if value(page, "sage_extents") != 1 or value(page, "sage_misses_total") < 1:
        bad("sage_extents / sage_misses_total:\n" + page)
    uid = os.geteuid()
    ns = f'{{namespace="{uid}",label="",uid="{uid}"}}'
    if not 8 << 20 <= value(page, "sage_namespace_resident_bytes", ns) < (8 << 20) + 32768 or value(page, "sage_namespace_extents", ns) != 1:
        bad("per-namespace usage:\n" + page)
    dev = re.search(r'^sage_resident_bytes\{device="0",uuid="GPU-[0-9a-f-]{36}"\} (\d+)$', page, re.M)
    if not dev or int(dev.group(1)) != value(page, "sage_namespace_resident_bytes", ns):
        bad("bytes resident on device 0 with its UUID:\n" + page)
    if 'sage_instances{state="active"} 0' not in page or "sage_build_info{" not in page:
        bad("instances by state / build info missing")


def check_hostile():
    _, _, port = start_saged("--metrics-listen", "127.0.0.1:0")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

    step("methods and paths")
    for raw, want in [
        (b"GET /metrics HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 405"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 405"),
        (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", b"HTTP/1.1 404"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"HTTP/1.1 400"),  # a TLS ClientHello: garbage at once
        (b"get /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
        (b"A" * 64, b"HTTP/1.1 400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", b"HTTP/1.1 431"),
    ]:
        out = http(port, raw)
        if not out.startswith(want):
            bad(f"{raw[:40]!r}: got {out[:60]!r}, want {want!r}")
    out = http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    if not out.endswith(b"\r\n\r\n"):
        bad("HEAD sent a body")

    step("slowloris: 16 connections trickle a request a byte at a time; the broker serves its clients meanwhile")
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    t0 = time.monotonic()
    refused_seen = False
    closed = [False] * len(slow)
    trickle = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000  # a plausible head that never ends
    for s in slow:
        s.setblocking(False)
    sent = 0
    while not all(closed) and time.monotonic() - t0 < 12:
        sent += 1
        for i, s in enumerate(slow):
            if closed[i]:
                continue
            try:
                s.send(trickle[sent - 1:sent])
            except OSError:
                closed[i] = True
                continue
            try:
                if s.recv(1) == b"":
                    closed[i] = True
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = True
        if not refused_seen and time.monotonic() - t0 > 1:
            # every slot is taken: a scrape now is refused at once, the broker's socket still answers
            out = http(port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout=2)
            refused_seen = out.startswith(b"HTTP/1.1 503")
            ok, took = ping()
            if not ok or took > 2:
                bad(f"sagectl ping during slowloris: ok={ok} in {took:.2f} s")
        time.sleep(0.25)
    took = time.monotonic() - t0
    if not all(closed):
        bad(f"slowloris connections still open after {took:.1f} s (deadline 5 s)")
    elif took < 4:
        bad(f"slowloris connections closed after {took:.1f} s, before their deadline")
    if not refused_seen:
        bad("a 17th connection was not answered 503 while 16 were held")
    for s in slow:
        s.close()

    step("1000 connections at once; then everyone is served again")
    conns = []
    for _ in range(1000):  # non-blocking: all of them in flight together
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        conns.append(s)
    ok, took = ping()
    if not ok or took > 2:
        bad(f"sagectl ping with 1000 metrics connections: ok={ok} in {took:.2f} s")
    # the first 16 accepted hold every place (no request sent yet): one more is told 503 (or closed)
    try:
        out = http(port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout=5)
    except OSError:
        out = b"(reset)"
    if out.startswith(b"HTTP/1.1 200"):
        bad("served a 17th connection while 16 held their places")
    answered = 0
    for s in conns:
        s.settimeout(10)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            head = s.recv(64)
            if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.1 503"):
                answered += 1
        except OSError:
            pass  # closed at once (every slot taken), before or after our request
        s.close()
    page = scrape(port)
    refused = value(page, "sage_metrics_connections_refused_total")
    if not refused or refused < 16:
        bad(f"sage_metrics_connections_refused_total {refused} after 1000 connections (at most 16 at once)")
    print(f"   {answered} answered, {refused:.0f} refused with 503")
    ok, _ = ping()
    if not ok:
        bad("sagectl ping after the flood")

    step("a client that never reads its (large) response loses its slot at its deadline")
    # Many namespaces would make a large page; a reader that stops reading is enough to hold a slot.
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    t0 = time.monotonic()
    s.settimeout(15)
    # it gets its response (small: the socket buffers take it) and then the server waits for its hang-up
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        bad("the server did not hang up after the response")
    if time.monotonic() - t0 > 12:
        bad("hang-up only after the response deadline")
    s.close()


def check_refuse():
    step("non-loopback addresses need --metrics-listen-any")
    for addr, want in [("0.0.0.0:0", 2), ("[::]:0", 2), ("192.0.2.1:9464", 2), ("nonsense", 2), ("127.0.0.1:99999", 2)]:
        r = subprocess.run([saged, "--socket", sock, "--foreground", "--metrics-listen", addr], capture_output=True,
                           timeout=30)
        if r.returncode != want:
            bad(f"--metrics-listen {addr}: exit {r.returncode}, want {want}: {r.stderr.decode()}")
        elif b"metrics-listen" not in r.stderr:
            bad(f"--metrics-listen {addr}: no reason given: {r.stderr.decode()}")
    log = open(os.path.join(tmp, "any.log"), "w+")
    p = subprocess.Popen([saged, "--socket", sock, "--foreground", "-v", "--metrics-listen", "0.0.0.0:0",
                          "--metrics-listen-any"], stderr=log)
    procs.append(p)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and p.poll() is None:
        log.seek(0)
        m = re.search(r"metrics: http://0\.0\.0\.0:(\d+)/metrics", log.read())
        if m:
            if not http(int(m.group(1)), b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200"):
                bad("--metrics-listen-any: no page")
            break
        time.sleep(0.05)
    else:
        log.seek(0)
        bad("--metrics-listen 0.0.0.0:0 --metrics-listen-any did not start: " + log.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_prometheus():
    prometheus = need("prometheus", "no real scrape")
    _, host, port = start_saged("--metrics-listen", "127.0.0.1:0")
    publish("5")
    publish("6")
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                f"scrape_configs:\n  - job_name: sage\n    static_configs:\n      - targets: ['{host}:{port}']\n")
    for attempt in range(3):  # the web port is picked free, then bound by prometheus: retry if taken meanwhile
        web = free_port()
        log = open(os.path.join(tmp, f"prometheus{attempt}.log"), "w")
        p = subprocess.Popen([prometheus, "--config.file", config, "--storage.tsdb.path", os.path.join(tmp, "data"),
                              f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                             stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        step(f"prometheus (web 127.0.0.1:{web}) scrapes saged at {host}:{port}")
        deadline = time.monotonic() + 60
        got = None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                q = urllib.parse.urlencode({"query": 'sage_publishes_total{job="sage"}'})
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?{q}", timeout=2) as r:
                    result = json.load(r)["data"]["result"]
                if result:
                    got = result
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if p.poll() is not None:
            continue
        if not got:
            bad("prometheus never had sage_publishes_total (target down?)")
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/targets", timeout=2) as r:
                print(r.read().decode()[:2000])
            return
        if float(got[0]["value"][1]) != 2:
            bad(f"prometheus says sage_publishes_total = {got[0]['value'][1]}, the test published 2")
        q = urllib.parse.urlencode({"query": 'up{job="sage"}'})
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?{q}", timeout=2) as r:
            up = json.load(r)["data"]["result"]
        if not up or up[0]["value"][1] != "1":
            bad(f"target not up: {up}")
        return
    bad("prometheus did not start:\n" + open(log.name).read())


try:
    {"promtool": check_promtool, "hostile": check_hostile, "prometheus": check_prometheus,
     "refuse": check_refuse}[mode]()
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    shutil.rmtree(tmp, ignore_errors=True)
if failures:
    sys.exit(1)
print("all metrics checks passed")
