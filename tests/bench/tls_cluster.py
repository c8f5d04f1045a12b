"""Workloads (f) TLS and HTTP/2 and (h) cluster mode of the benchmark runner (compare.py): the
same handshake and fan-out workloads over TLS and h2 beside nginx, and one thread's clients over
three replicas sharing a Redis against a single gateway."""

import json, os, re, socket, subprocess, time

from compare import HEADERS, PUBLISH_MARGIN_S, REL, free_port, http, nginx, procs


def start_redis(tmp):
    """A redis-server on a free port (no persistence: a benchmark), answering PING."""
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(7) == b"+PONG\r\n":
                    return p, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def spread(b, targets, thread, per_target, rate, duration, watch):
    """Clients of one thread spread over `targets` (one railgate-load each), all measured over
    one window: each load waits for the go file, written once every one is up and the events
    flow (a load measuring from its own readiness would count the time before the publishing
    began as events missed). Each client's ids are checked from its first event (`--tally`)."""
    loads = []
    go = os.path.join(b.tmp, "go")
    if os.path.exists(go):
        os.remove(go)
    for i, t in enumerate(targets):
        ready = os.path.join(b.tmp, f"ready-{i}")
        if os.path.exists(ready):
            os.remove(ready)
        cmd = [os.path.join(REL, "railgate-load"), "sse", "--target", t, "--threads", thread, "--per-thread", str(per_target),
               "--duration", str(duration), "--ready-file", ready, "--go-file", go, "--tally",
               "--watch", ",".join(f"{n}{j}={p}" for j, (n, p) in enumerate(watch)),
               "--header", f"Authorization: Bearer {b.tok}"] + sum((["--header", h] for h in HEADERS), [])
        loads.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True), ready))
    while not all(os.path.exists(r) for _, r in loads):
        time.sleep(0.05)
    http("POST", f"http://{b.mock_addr}/_mock/publish", {"thread_id": thread, "count": int(rate * (duration + PUBLISH_MARGIN_S)), "rate_per_s": rate})
    with open(go, "w") as f:
        f.write("go")
    results = [json.loads(p.communicate(timeout=duration + 300)[0]) for p, _ in loads]
    return results


def cluster_row(b):
    """(h) One thread × 600 SSE clients over three replicas in cluster mode (Redis) against a
    single gateway; share_upstream on, one worker each."""
    redis, url = start_redis(b.tmp)
    replicas = [b.start_gateway(f"replica-{i}", "true", 1, cluster=url) for i in range(3)]
    rate, duration = 100, 15
    print(f"\n### (h) cluster: 1 thread × 600 SSE clients, {rate} events/s, {duration} s (share_upstream, 1 worker each)\n")
    print("| setup | connected | upstream streams | delivered ev/s | of expected | ids skipped / repeated | p50 ms | p99 ms (worst replica) | CPU (cores) |\n|---|---|---|---|---|---|---|---|---|")
    setups = [("single gateway", [b.gw["railgate-shared-1w"]]), ("3 replicas + Redis", replicas)]
    for name, gws in setups:
        before = b.stats()["sse_streams_opened"]
        thread = b.threads(1)[0]
        watch = [("mock", b.mock.pid), ("redis", redis.pid)] + [("railgate", g[0].pid) for g in gws]
        rs = spread(b, [g[1] for g in gws], thread, 600 // len(gws), rate, duration, watch)
        streams = b.stats()["sse_streams_opened"] - before
        eps = sum(r["events_per_s"] for r in rs)
        cpu = {}
        for k, v in rs[0]["cpu"].items():
            base = re.sub(r"\d+$", "", k)
            cpu[base] = cpu.get(base, 0) + v
        cpu_text = " ".join(f"{k}={v:.2f}" for k, v in sorted(cpu.items()) if k != "load")
        p50 = max(r["latency_us"]["p50"] for r in rs) / 1000
        p99 = max(r["latency_us"]["p99"] for r in rs) / 1000
        gaps, repeats = (sum(r["tally"][k] for r in rs) for k in ("gaps", "repeats"))
        print(f"| {name} | {sum(r['connected'] for r in rs)}/600 | {streams} | {eps:,.0f} | {eps / (600 * rate) * 100:.1f}% | "
              f"{gaps} / {repeats} | {p50:.2f} | {p99:.2f} | {cpu_text} |", flush=True)


def make_cert(tmp):
    """A self-signed leaf for `localhost` / 127.0.0.1 (not a CA, so rustls accepts it as its own
    trust anchor); returns (cert, key) paths."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    return cert, key


def tls_h2(b):
    """(f) The same handshake and fan-out workloads over plain HTTP/1.1, TLS + HTTP/1.1 and TLS + h2
    (ALPN), railgate beside nginx with the same TLS settings. Each client has its own connection."""
    cert, key = make_cert(b.tmp)
    tls = (cert, key)
    port = free_port()
    ngx_p, ngx_pids = nginx(1, b.mock_addr, port, b.tmp, tls)
    ngx_tls = (f"127.0.0.1:{port}", [("mock", b.mock.pid)] + [("nginx", p) for p in ngx_pids])
    gws = {}
    for name, shared in (("railgate-1w", "false"), ("railgate-shared-1w", "true")):
        p, addr, _ = b.start_gateway(f"{name}-tls", shared, 1, tls)
        gws[name] = (addr, [("mock", b.mock.pid), ("railgate", p.pid)])
    auth = [f"Authorization: Bearer {b.tok}"] + HEADERS
    plain = {n: (t, h, w) for n, t, h, w in b.paths(True)}
    transports = [("HTTP/1.1", [], None), ("TLS 1.3 + HTTP/1.1", ["--tls-ca", cert], True),
                  ("TLS 1.3 + h2", ["--tls-ca", cert, "--h2"], True)]

    def target(name, over_tls):
        if not over_tls:
            return plain[name]
        if name == "nginx-1w":
            return ngx_tls[0], [], ngx_tls[1]
        return gws[name][0], auth, gws[name][1]

    print("\n### (f) TLS and HTTP/2: new authenticated SSE streams per second (32 concurrent clients, each on a new connection, 10 s)\n")
    print("| path | transport | streams/s | vs nginx-1w, same transport | failed | CPU (cores) |\n|---|---|---|---|---|---|")
    for label, extra, over_tls in transports:
        base = None
        for name in ("nginx-1w", "railgate-1w"):
            t, h, w = target(name, over_tls)
            r = b.load("handshakes", t, b.threads(4), 1, h, w, 10, 0, ["--concurrency", "32"] + extra)
            base = base if base is not None else r["per_s"]
            cpu = " ".join(f"{k}={v:.2f}" for k, v in sorted(r["cpu"].items()))
            ratio = f"{r['per_s'] / base:.2f}" if base else "-"
            print(f"| {name} | {label} | {r['per_s']:,.0f} | {ratio} | {r['failed']} | {cpu} |", flush=True)
    print("\n### (f) TLS and HTTP/2: 1 thread × 500 SSE subscribers, 200 events/s, 15 s\n")
    print("| path | transport | connected | of expected | p50 ms | p99 ms | p50 / p99 vs nginx-1w, same transport | CPU (cores) |\n|---|---|---|---|---|---|---|---|")
    for label, extra, over_tls in transports:
        base = None
        for name in ("nginx-1w", "railgate-1w", "railgate-shared-1w"):
            t, h, w = target(name, over_tls)
            r = b.load("sse", t, b.threads(1), 500, h, w, 15, 200, extra)
            base = base or r
            lat, bl = r["latency_us"], base["latency_us"]
            cpu = " ".join(f"{k}={v:.2f}" for k, v in sorted(r["cpu"].items()))
            print(f"| {name} | {label} | {r['connected']}/{r['clients']} | {r['events_per_s'] / (500 * 200) * 100:.1f}% | "
                  f"{lat['p50']/1000:.2f} | {lat['p99']/1000:.2f} | {lat['p50'] / max(bl['p50'], 1):.2f} / {lat['p99'] / max(bl['p99'], 1):.2f} | {cpu} |", flush=True)
