"""Soak: 10,000 idle SSE streams and 1,000 active ones (one per thread, each with its own upstream
stream) through one gateway for ten minutes. Samples the gateway's RSS every 10 s and checks every
active client's `id:` sequence: each must get every published event once, in order."""

import json, os, time

from compare import http, rss_kib, HEADERS

IDLE, ACTIVE, RATE = 10_000, 1_000, 2
MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
SETTLE_S = 60  # publishing stops this long before the end, so every event has arrived
# Each active thread's resume journal fills for `journal_age_s` (default 300 s), then holds a
# steady window: RSS is compared from a minute after that (or from 1 min in shorter runs).
WARM_S = 360
IDLE_ROUTE = ('[[routes]]\nname = "idle-sse"\npath = "/sse/idle/{thread_id}"\nkind = "sse"\nshare_upstream = true\n'
              'upstream_path = "/sse/chat/{thread_id}"\nrequire = ["tenant", "mode", "project", "app"]\n')


def run(b):
    duration = int(MINUTES * 60)
    count = RATE * (duration - SETTLE_S)
    print(f"\n### (soak) {IDLE:,} idle + {ACTIVE:,} active SSE streams, {RATE} events/s each, {duration} s\n")
    # One tenant holds all 11,000 streams (above the default cap of 10,000 per tenant), and every
    # client comes from 127.0.0.1 (above the default cap on one address's connections still
    # authenticating, while 200 open at once). The idle streams share one upstream stream: with
    # their own, the gateway would need 22,000 sockets, over this machine's 20,000 descriptors.
    limits = "max_streams_per_tenant = 20000\nmax_unauthenticated_per_address = 4096\n"
    gw, addr, _ = b.start_gateway("soak", "false", limits=limits, routes=IDLE_ROUTE)
    auth = [f"Authorization: Bearer {b.tok}"] + HEADERS
    rss = [(0.0, rss_kib(gw.pid))]
    idle = b.spawn_load("idle-sse", addr, b.threads(1), IDLE, auth, [], duration + 30,
                        ["--ramp", "200", "--path", "/sse/idle/{thread}"])
    active_threads = b.threads(ACTIVE)
    active = b.spawn_load("sse", addr, active_threads, 1, auth, [("railgate", gw.pid)], duration,
                          ["--tally", "--ramp", "200"])
    t0 = time.monotonic()
    rss.append((0.0, rss_kib(gw.pid)))
    for t in active_threads:
        http("POST", f"http://{b.mock_addr}/_mock/publish", {"thread_id": t, "count": count, "rate_per_s": RATE})
    next_sample = t0 + 10
    while active.poll() is None:
        if time.monotonic() >= next_sample:
            rss.append((time.monotonic() - t0, rss_kib(gw.pid)))
            next_sample += 10
        time.sleep(0.2)
    r = json.loads(active.stdout.read())
    r["cpu"] = {k.rstrip("0123456789"): v for k, v in r["cpu"].items()}
    idle_up = idle_connected(idle)
    report(r, rss, count, idle_up)
    gw.terminate()
    gw.wait(timeout=30)


def idle_connected(idle):
    """The idle loader's connections still open at the end (it reports when its window closes)."""
    out, _ = idle.communicate(timeout=120)
    r = json.loads(out)
    return f"{r['connected'] - (r['errors'] - (r['clients'] - r['connected']))}/{r['clients']}"


def report(r, rss, count, idle_up):
    tally = r["tally"]
    warm = WARM_S if rss[-1][0] >= WARM_S + 120 else 60
    base = next((kib for t, kib in rss if t >= warm), rss[-1][1])
    at_1 = next((kib for t, kib in rss if t >= 60), rss[-1][1])
    end, peak = rss[-1][1], max(kib for _, kib in rss)
    growth = (end - base) / base * 100
    print("| measure | value |\n|---|---|")
    print(f"| idle streams open at the end | {idle_up} |")
    print(f"| active streams connected / ended early | {r['connected']}/{r['clients']} / {tally['ended']} |")
    print(f"| events per active client (expected {count:,}) | min {tally['min_events']:,}, max {tally['max_events']:,} |")
    print(f"| ids skipped / repeated (all clients) | {tally['gaps']} / {tally['repeats']} |")
    print(f"| gateway RSS before / with every stream up (MiB) | {rss[0][1]/1024:.1f} / {rss[1][1]/1024:.1f} |")
    print(f"| gateway RSS at 1 min / at {warm} s / at the end / peak (MiB) | {at_1/1024:.1f} / {base/1024:.1f} / {end/1024:.1f} / {peak/1024:.1f} |")
    print(f"| RSS growth from {warm} s to the end | {growth:+.1f}% |")
    minutes = [f"{kib/1024:.0f}" for t, kib in rss[2:] if int(t) % 60 < 10]
    print(f"| RSS each minute (MiB) | {' '.join(minutes)} |")
    print(f"| gateway CPU (cores) | {r['cpu'].get('railgate', 0):.2f} |")
    lost = tally["min_events"] < count or tally["gaps"] or tally["repeats"] or tally["ended"]
    print(f"\nevery event delivered exactly once: {'no' if lost else 'yes'}; RSS flat (< 5%): {'yes' if growth < 5 else 'no'}", flush=True)
