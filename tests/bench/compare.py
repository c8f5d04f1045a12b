"""Benchmark runner: the same workloads through the direct path, nginx (1 and 2 workers) and
railgate, in one run, on this machine. Prints a table; see docs/BENCHMARKS.md."""

import json, os, re, resource, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REL = os.path.join(ROOT, "target", "release")
SECRET = "bench-jwt-secret-0123456789"
TENANT = "t_bench"
HEADERS = ["X-Tenant-Id: t_bench", "X-Mode: lab", "X-Project-Id: p_chat", "X-App-Id: app-chat"]
# Seconds a row's publisher runs past its window. The mock serves every row: a publisher still
# running into the next rows would take CPU from them.
PUBLISH_MARGIN_S = 2

for _nofile in (65536, 20000):
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_nofile, _nofile))
        break
    except (ValueError, OSError):
        pass

procs = []

if __name__ == "__main__":
    # The workload modules import this one by name: let them share this instance (and `procs`).
    sys.modules["compare"] = sys.modules["__main__"]


def start(cmd, env=None, ready=True, stderr=subprocess.DEVNULL):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    procs.append(p)
    if not ready:
        return p, {}
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"{cmd[0]} did not start: {line!r}")
    return p, dict(kv.split("=", 1) for kv in line.split()[1:])


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def token():
    out = subprocess.run([os.path.join(REL, "railgate"), "token", "--tenant", TENANT, "--sub", "bench", "--ttl", "2h"],
                         env={**os.environ, "AUTH_JWT_SIGNING": SECRET}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def nginx(workers, upstream, port, tmp, tls=None, access_log=None):
    """nginx in front of `upstream`; with `tls` = (cert, key) the listener is TLS 1.2/1.3 with
    HTTP/2 offered by ALPN (`listen … ssl http2`: this nginx predates the `http2 on` directive);
    with `access_log` (a path) one line per request in its default format, else none."""
    tag = f"{workers}{'-tls' if tls else ''}{'-log' if access_log else ''}"
    conf = os.path.join(tmp, f"nginx-{tag}.conf")
    listen = f"127.0.0.1:{port} backlog=4096"
    ssl = ""
    if tls:
        listen += " ssl http2"
        ssl = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3;"
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {tmp}/nginx-{tag}.pid;
error_log {tmp}/nginx-{tag}.err warn;
events {{ worker_connections 20000; multi_accept on; }}
http {{
  access_log {access_log or 'off'};
  upstream mock {{ server {upstream}; keepalive 512; }}
  map $http_upgrade $conn {{ default upgrade; '' ''; }}
  server {{
    listen {listen};
    {ssl}
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection $conn;
      proxy_set_header Upgrade $http_upgrade;
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 1h;
    }}
  }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if tls:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            else:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except Exception:
            time.sleep(0.05)
    # The master's command line names the config; its workers are its children.
    pids = [str(p.pid)] + subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    return p, pids


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Bench:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="railgate-bench-")
        self.mock, r = start([os.path.join(REL, "upstream-mock"), "--listen", "127.0.0.1:0"])
        self.mock_addr = r["listen"]
        self.tok = token()
        self.gw = {}
        for name, shared, workers in (("railgate-1w", "false", 1), ("railgate-2w", "false", 2),
                                      ("railgate-shared-1w", "true", 1), ("railgate-shared-2w", "true", 2)):
            self.gw[name] = self.start_gateway(name, shared, workers)
        self.ngx = {}
        for w in (1, 2):
            port = free_port()
            p, pids = nginx(w, self.mock_addr, port, self.tmp)
            self.ngx[w] = (p, f"127.0.0.1:{port}", pids)

    def start_gateway(self, name, shared, workers=0, tls=None, cluster=None, limits="", routes="", log=None):
        """A railgate process in front of the mock (`shared`: "true"/"false" for the SSE route;
        `workers`: runtime worker threads, 0 = one per core; `tls`: (cert, key) for the listener;
        `cluster`: a Redis URL for cluster mode; `limits`: more lines for `[limits]`; `routes`: more `[[routes]]`;
        `log`: a file for its log lines at the default level, `info` — else only warnings, discarded)."""
        cfg = os.path.join(self.tmp, f"{name}.toml")
        tls_table = f'[tls]\ncert_file = "{tls[0]}"\nkey_file = "{tls[1]}"\n' if tls else ""
        if cluster:
            tls_table += f'[cluster]\nredis_url = "{cluster}"\n'
        with open(cfg, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\nupstream = "http://{self.mock_addr}"\nworkers = {workers}\n'
                    f'[limits]\nupstream_idle_timeout_s = 300\n{limits}{tls_table}'
                    f'[[routes]]\nname = "chat-sse"\npath = "/sse/chat/{{thread_id}}"\nkind = "sse"\nshare_upstream = {shared}\n'
                    f'require = ["tenant", "mode", "project", "app"]\n'
                    f'[[routes]]\nname = "chat-ws"\npath = "/ws/chat/{{thread_id}}"\nkind = "ws"\nrequire = ["tenant", "mode", "project", "app"]\n'
                    f'[[routes]]\nname = "chat-http"\npath = "/chat/threads/{{thread_id}}/**"\nkind = "http"\nrequire = ["tenant"]\n{routes}')
        env = {**os.environ, "AUTH_JWT_SIGNING": SECRET, "ENGINES_TICKET_SECRET": "t", "RUST_LOG": "info" if log else "warn"}
        cmd = [os.path.join(REL, "railgate"), "serve", "--config", cfg]
        if not log:
            p, r = start(cmd, env=env)
        else:
            with open(log, "w") as f:
                p, r = start(cmd, env=env, stderr=f)
        return (p, r["listen"], r["admin"])

    def paths(self, include_shared=False, bare=False):
        """The rows of a workload: direct, nginx, (with `bare`) the bare hyper proxy, railgate."""
        out = [("direct", self.mock_addr, [], [("mock", self.mock.pid)]),
               ("nginx-1w", self.ngx[1][1], [], [("mock", self.mock.pid)] + [("nginx", p) for p in self.ngx[1][2]]),
               ("nginx-2w", self.ngx[2][1], [], [("mock", self.mock.pid)] + [("nginx", p) for p in self.ngx[2][2]])]
        if bare:
            out.append(self.bare_path())
        auth = [f"Authorization: Bearer {self.tok}"] + HEADERS
        names = ["railgate-1w", "railgate-2w"] + (["railgate-shared-1w", "railgate-shared-2w"] if include_shared else [])
        for name in names:
            out.append((name, self.gw[name][1], auth, [("mock", self.mock.pid), ("railgate", self.gw[name][0].pid)]))
        return out

    def logged_paths(self):
        """nginx-1w with its default `combined` access log and railgate-1w at its default log
        level, `info`, each writing to a file in the run's directory; started once. `paths` rows."""
        if not hasattr(self, "_logged"):
            port = free_port()
            ngx_log, gw_log = self.access_logs()
            _, pids = nginx(1, self.mock_addr, port, self.tmp, access_log=ngx_log)
            p, addr, _ = self.start_gateway("railgate-1w-log", "false", 1, log=gw_log)
            auth = [f"Authorization: Bearer {self.tok}"] + HEADERS
            self._logged = [("nginx-1w-log", f"127.0.0.1:{port}", [], [("mock", self.mock.pid)] + [("nginx", q) for q in pids]),
                            ("railgate-1w-log", addr, auth, [("mock", self.mock.pid), ("railgate", p.pid)])]
        return self._logged

    def access_logs(self):
        """The files the `-log` rows write: nginx's, railgate's."""
        return os.path.join(self.tmp, "nginx-access.log"), os.path.join(self.tmp, "railgate-1w.log")

    def bare_path(self):
        """A bare hyper proxy (`bare-proxy`, one current-thread worker, no checks) in front of the
        mock, started once: the yardstick for what hyper and tokio alone cost. A `paths` row."""
        if not hasattr(self, "_bare"):
            p, r = start([os.path.join(REL, "bare-proxy"), "127.0.0.1:0", self.mock_addr])
            self._bare = ("hyper-bare-1w", r["listen"], [], [("mock", self.mock.pid), ("hyper", p.pid)])
        return self._bare

    def threads(self, n):
        return [http("POST", f"http://{self.mock_addr}/chat/threads", {"title": "b"}, {"X-Tenant-Id": TENANT, "X-Project-Id": "p_chat"})["id"] for _ in range(n)]

    def stats(self):
        return http("GET", f"http://{self.mock_addr}/_mock/stats")

    def spawn_load(self, mode, target, threads, per_thread, headers, watch, duration, extra=()):
        """Starts `railgate-load` and returns it once every connection is up."""
        ready = os.path.join(self.tmp, "ready")
        if os.path.exists(ready):
            os.remove(ready)
        cmd = [os.path.join(REL, "railgate-load"), mode, "--target", target, "--threads", ",".join(threads),
               "--per-thread", str(per_thread), "--duration", str(duration), "--ready-file", ready,
               "--watch", ",".join(f"{n}{i}={p}" for i, (n, p) in enumerate(watch))]
        for h in headers:
            cmd += ["--header", h]
        cmd += list(extra)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        while not os.path.exists(ready) and p.poll() is None:
            time.sleep(0.05)
        return p

    def load(self, mode, target, threads, per_thread, headers, watch, duration, rate, extra=()):
        p = self.spawn_load(mode, target, threads, per_thread, headers, watch, duration, extra)
        if rate:
            for t in threads:
                http("POST", f"http://{self.mock_addr}/_mock/publish", {"thread_id": t, "count": int(rate * (duration + PUBLISH_MARGIN_S)), "rate_per_s": rate})
        out, _ = p.communicate(timeout=duration + 300)
        result = json.loads(out)
        for field in ("cpu", "cpu_user"):
            summed = {}
            for k, v in result.get(field, {}).items():
                base = re.sub(r"\d+$", "", k)
                summed[base] = summed.get(base, 0) + v
            result[field] = summed
        return result

    def close(self):
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except Exception:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except Exception:
                p.kill()
        # The access logs of the `-log` rows run to hundreds of MiB.
        for f in self.access_logs():
            if os.path.exists(f):
                os.remove(f)


def fmt_row(name, r, expected, direct, ngx):
    eps = r["events_per_s"]
    lat = r["latency_us"]
    # The proxy's share of user time after its CPU: the kernel's work is alike, the rest is its own.
    user = r.get("cpu_user", {})
    share = lambda k, v: f" (user {user[k] / v:.0%})" if k in ("nginx", "railgate") and v > 0 and k in user else ""
    cpu = " ".join(f"{k}={v:.2f}{share(k, v)}" for k, v in sorted(r["cpu"].items()))
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    return (f"| {name} | {r['connected']}/{r['clients']} | {eps:,.0f} | {eps / expected * 100:.1f}% | {lat['p50']/1000:.2f} | {lat['p99']/1000:.2f} | "
            f"{ratio(lat['p50'], direct['latency_us']['p50'])} / {ratio(lat['p99'], direct['latency_us']['p99'])} | "
            f"{ratio(lat['p50'], ngx['latency_us']['p50']) if ngx else '-'} / {ratio(lat['p99'], ngx['latency_us']['p99']) if ngx else '-'} | "
            f"{ratio(eps, ngx['events_per_s']) if ngx else '-'} | {cpu} |")


HEAD = ("| path | connected | delivered ev/s | of expected | p50 ms | p99 ms | p50 / p99 vs direct | p50 / p99 vs nginx-1w | ev/s vs nginx-1w | CPU (cores) |\n"
        "|---|---|---|---|---|---|---|---|---|---|")


def fanout(b, label, threads, per_thread, rate, duration, include_shared, bare=False):
    print(f"\n### ({label}) {len(threads)} thread(s) × {per_thread} SSE subscriber(s), {rate} events/s per thread, {duration} s\n")
    print(HEAD)
    expected = len(threads) * per_thread * rate
    results = {}
    for name, target, headers, watch in b.paths(include_shared, bare):
        before = b.stats()["sse_streams_opened"]
        ts = b.threads(len(threads))
        r = b.load("sse", target, ts, per_thread, headers, watch, duration, rate)
        r["upstream_streams"] = b.stats()["sse_streams_opened"] - before
        results[name] = r
        print(fmt_row(name, r, expected, results["direct"], results.get("nginx-1w")), flush=True)
    return results


def cpu_of(pids):
    """utime + stime (seconds) of each process in `pids` (name, pid), summed by name."""
    out = {}
    for name, pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return out


def wrk(url, headers, seconds=10, connections=50):
    """Runs wrk (1 thread); returns (requests/s, p50 ms, p99 ms, non-2xx count)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, pct(50), pct(99), int(bad.group(1)) if bad else 0


def http_rail(b):
    """(g) The HTTP rail: a plain proxied GET with JWT, context and ownership checks on railgate,
    a plain proxy on nginx and on bare hyper (`bare-proxy`), the mock directly; wrk, 50
    connections, 10 s, one worker each. Then nginx and railgate again with their access logs on
    (`Bench.logged_paths`); a `-log` row's ratio is to `nginx-1w-log`."""
    th = b.threads(1)[0]
    path = f"/chat/threads/{th}/messages"
    gw = b.gw["railgate-1w"]
    auth = [f"Authorization: Bearer {b.tok}", f"X-Tenant-Id: {TENANT}"]
    # What hyper alone costs: each client connection paired with an upstream one, no checks.
    _, bare_addr, _, bare_watch = b.bare_path()
    rows = [("direct", b.mock_addr, [("mock", b.mock.pid)], []),
            ("nginx-1w", b.ngx[1][1], [("mock", b.mock.pid)] + [("nginx", p) for p in b.ngx[1][2]], []),
            ("hyper-bare-1w", bare_addr, bare_watch, []),
            ("railgate-1w", gw[1], [("mock", b.mock.pid), ("railgate", gw[0].pid)], auth)]
    print("\n### (g) HTTP rail: GET of a thread's messages, wrk 1 thread × 50 connections, 10 s\n")
    print("| path | requests/s | vs nginx-1w | p50 ms | p99 ms | non-2xx | CPU µs per request |\n|---|---|---|---|---|---|---|")
    base = {}
    for name, addr, _, watch in b.logged_paths():
        rows.append((name, addr, watch, auth if name.startswith("railgate") else []))
    for row in rows:
        http_row(row, path, base)


def http_row(row, path, base):
    """One row of (g): wrk against `addr`, the CPU of `pids` per request; `base` keeps nginx's
    requests/s (with and without its access log) for the ratios."""
    name, addr, pids, headers = row
    before = cpu_of(pids)
    rps, p50, p99, bad = wrk(f"http://{addr}{path}", headers)
    after = cpu_of(pids)
    per = " ".join(f"{k}={(after[k] - before.get(k, 0)) / (rps * 10) * 1e6:.0f}" for k in sorted(after))
    logged = name.endswith("-log")
    if name.startswith("nginx-1w"):
        base[logged] = rps
    ratio = f"{rps / base[logged]:.2f}" if logged in base else "-"
    print(f"| {name} | {rps:,.0f} | {ratio} | {p50:.2f} | {p99:.2f} | {bad} | {per} |", flush=True)


def main(which):
    import tls_cluster
    b = Bench()
    try:
        print(f"# railgate benchmark — {time.strftime('%Y-%m-%d %H:%M')} — {os.cpu_count()} cores\n")
        if "a" in which or "e" in which:
            ra = fanout(b, "a", ["x"], 500, 200, 15, True)
        if "a+" in which or "e" in which:
            rap = fanout(b, "a+", ["x"], 500, 2000, 15, True)
        if "e" in which:
            print("\n### (e) share_upstream off vs on\n\n| workload | workers | share_upstream | upstream streams | mock CPU | delivered ev/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|")
            for label, res in (("a", ra), ("a+", rap)):
                for name in ("railgate-1w", "railgate-shared-1w", "railgate-2w", "railgate-shared-2w"):
                    r = res[name]
                    print(f"| {label} | {name[-2]} | {'on' if 'shared' in name else 'off'} | {r['upstream_streams']} | {r['cpu'].get('mock', 0):.2f} | {r['events_per_s']:,.0f} | {r['latency_us']['p50']/1000:.2f} | {r['latency_us']['p99']/1000:.2f} |")
        if "b" in which:
            fanout(b, "b", ["x"] * 500, 1, 4, 15, False, bare=True)
        if "c" in which:
            print("\n### (c) idle connections: gateway RSS growth per connection (each row a fresh gateway process)\n\n| rail | connections | RSS before (MiB) | RSS after (MiB) | KiB per connection |\n|---|---|---|---|---|")
            for mode, n, shared in (("idle-sse", 9000, "false"), ("idle-sse", 9000, "true"), ("idle-ws", 9000, "false")):
                # Every client comes from 127.0.0.1: above the default cap on one address's
                # connections still authenticating while 200 open at once.
                p, addr, _ = b.start_gateway(f"fresh-{mode}-{shared}", shared,
                                             limits="max_unauthenticated_per_address = 4096\n")
                ts = b.threads(1)
                before = rss_kib(p.pid)
                path = "/sse/chat/{thread}" if mode == "idle-sse" else "/ws/chat/{thread}"
                hello = json.dumps({"type": "hello", "context": {"tenant_id": TENANT, "mode": "lab", "project_id": "p_chat", "app_id": "app-chat"}})
                extra = ["--path", path, "--ramp", "200"] + (["--hello", hello] if mode == "idle-ws" else [])
                ready = os.path.join(b.tmp, "ready")
                if os.path.exists(ready):
                    os.remove(ready)
                cmd = [os.path.join(REL, "railgate-load"), mode, "--target", addr, "--threads", ts[0], "--per-thread", str(n),
                       "--duration", "8", "--ready-file", ready, "--header", f"Authorization: Bearer {b.tok}"] + sum((["--header", h] for h in HEADERS), []) + extra
                lp = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                while not os.path.exists(ready) and lp.poll() is None:
                    time.sleep(0.05)
                time.sleep(3)
                after = rss_kib(p.pid)
                out, _ = lp.communicate(timeout=120)
                r = json.loads(out)
                conn = r["connected"]
                label = mode[5:] + (" (share_upstream)" if shared == "true" and mode == "idle-sse" else "")
                print(f"| {label} | {conn}/{n} | {before/1024:.1f} | {after/1024:.1f} | {(after - before) / max(conn, 1):.1f} |", flush=True)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
                time.sleep(2)
        if "d" in which:
            print("\n### (d) handshakes: new authenticated SSE connections per second (32 concurrent clients, 10 s)\n\n| path | connections/s | failed | CPU (cores) |\n|---|---|---|---|")
            for name, target, headers, watch in b.paths(bare=True) + b.logged_paths():
                ts = b.threads(4)
                extra = ["--concurrency", "32"]
                cmd_watch = watch
                r = b.load("handshakes", target, ts, 1, headers, cmd_watch, 10, 0, extra)
                cpu = " ".join(f"{k}={v:.2f}" for k, v in sorted(r["cpu"].items()))
                print(f"| {name} | {r['per_s']:,.0f} | {r['failed']} | {cpu} |", flush=True)
        if "f" in which:
            tls_cluster.tls_h2(b)
        if "g" in which:
            http_rail(b)
        if "h" in which:
            tls_cluster.cluster_row(b)
        if "hops" in which:
            import hops
            hops.run(b)
        if "soak" in which:
            import soak
            soak.run(b)
    finally:
        b.close()


if __name__ == "__main__":
    main(set(sys.argv[1:]) or {"a", "a+", "b", "c", "d", "e", "f", "g", "h"})
