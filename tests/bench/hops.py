"""Hops: where (b)'s latency goes. The (b) load (500 threads × 1 SSE subscriber, 4 events/s each)
through nginx (1 worker), a bare hyper proxy and railgate (1 worker), one after the other, with the
kernel's scheduler and system-call tracepoints recorded system-wide for a few seconds of each
(`perf record`, perf's own calls left out). For the proxy's thread it prints how long a wake-up
took (sched_waking → sched_switch onto it), split by what the CPU it ran on was doing (idle, or
running another task that had to stop first), and its own part of each wake-up: epoll's return to
the first client write, the last write to the next wait, system calls per wake-up.
x86_64 only (system-call numbers)."""

import json, os, platform, re, shutil, subprocess, tempfile, time

from compare import http

SECONDS = 4
NR_WAIT = {232, 281, 441}  # epoll_wait, epoll_pwait, epoll_pwait2
NR_READ = {0, 19, 45}  # read, readv, recvfrom
NR_WRITE = {1, 20, 44}  # write, writev, sendto
LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def pct(xs, q):
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


def events(lines):
    """`perf script` lines as (comm, pid, tid, cpu, time, event, rest)."""
    return [m.groups() for m in map(LINE.match, lines) if m]


def analyse(evs, tid):
    """Figures for thread `tid` from `events` (times in seconds)."""
    woken, wake_from = {}, None
    calls, wake_at, last_write, first_write_seen = 0, None, None, False
    to_write, after_write, per_wake = [], [], []
    for _, _, t, _, ts, ev, rest in evs:
        ts = float(ts)
        if ev == "sched:sched_waking":
            if re.search(rf"\bpid={tid}\b", rest):
                wake_from = ts
        elif ev == "sched:sched_switch":
            sw = re.search(r"prev_pid=(\d+).*next_pid=(\d+)", rest)
            if sw and sw.group(2) == tid and wake_from is not None:
                kind = "idle" if sw.group(1) == "0" else "busy"
                woken.setdefault(kind, []).append(ts - wake_from)
                wake_from = None
        elif t == tid:
            nr = int(re.search(r"NR (-?\d+)", rest).group(1))
            if ev == "raw_syscalls:sys_exit" and nr in NR_WAIT:
                if wake_at is not None:
                    per_wake.append(calls)
                wake_at, calls, first_write_seen = ts, 0, False
            elif ev == "raw_syscalls:sys_enter" and wake_at is not None:
                calls += nr not in NR_WAIT
                if nr in NR_WRITE and not first_write_seen:
                    to_write.append(ts - wake_at)
                    first_write_seen = True
                if nr in NR_WAIT and last_write is not None:
                    after_write.append(ts - last_write)
                    last_write = None
            if ev == "raw_syscalls:sys_exit" and nr in NR_WRITE:
                last_write = ts
            elif ev == "raw_syscalls:sys_enter" and nr not in NR_WRITE and nr not in NR_WAIT:
                last_write = None
    for xs in (to_write, after_write, per_wake, *woken.values()):
        xs.sort()
    return woken, to_write, after_write, per_wake


def busiest_waiter(evs, pid):
    """The thread of process `pid` that waits in epoll most: the one that serves the streams."""
    counts = {}
    for _, p, t, _, _, ev, rest in evs:
        if p == pid and ev == "raw_syscalls:sys_exit":
            if int(re.search(r"NR (-?\d+)", rest).group(1)) in NR_WAIT:
                counts[t] = counts.get(t, 0) + 1
    return max(counts, key=counts.get) if counts else pid


def run(b):
    if platform.machine() != "x86_64":
        raise SystemExit("hops: the system-call numbers here are x86_64's")
    if not shutil.which("perf"):
        subprocess.run(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null"], check=True)
    print(f"\n### (hops) (b)'s load, traced for {SECONDS} s per row: a proxy's wake-ups and its own part\n")
    print("| path | p50 / p90 ms (load) | woken on an idle CPU: share, p50 / p90 µs | behind a running task: share, p50 / p90 µs "
          "| wake → first write p50 / p90 µs | last write → wait p50 µs | system calls per wake-up p50 |\n|---|---|---|---|---|---|---|")
    paths = {p[0]: p for p in b.paths(bare=True)}
    us = lambda x: f"{x * 1e6:.0f}"
    for name in ("direct", "nginx-1w", "hyper-bare-1w", "railgate-1w"):
        _, target, headers, watch = paths[name]
        ts = b.threads(500)
        duration = SECONDS + 8
        p = b.spawn_load("sse", target, ts, 1, headers, watch, duration)
        for t in ts:
            http("POST", f"http://{b.mock_addr}/_mock/publish", {"thread_id": t, "count": 4 * (duration + 2), "rate_per_s": 4})
        time.sleep(3)
        if name != "direct":
            data = os.path.join(tempfile.mkdtemp(prefix="railgate-hops-"), "perf.data")
            subprocess.run(["perf", "record", "-q", "-a", "-o", data,
                            "-e", "raw_syscalls:sys_enter", "--exclude-perf", "-e", "raw_syscalls:sys_exit", "--exclude-perf",
                            "-e", "sched:sched_waking,sched:sched_switch", "--", "sleep", str(SECONDS)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, _ = p.communicate(timeout=duration + 120)
        lat = json.loads(out)["latency_us"]
        row = f"| {name} | {lat['p50'] / 1000:.3f} / {lat['p90'] / 1000:.3f} |"
        if name == "direct":
            print(row + " - | - | - | - | - |", flush=True)
            continue
        script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace"],
                                check=True, capture_output=True, text=True)
        evs = events(script.stdout.splitlines())
        shutil.rmtree(os.path.dirname(data), ignore_errors=True)
        proxy = str(watch[-1][1])  # nginx's worker (with one worker), the hyper or railgate process
        woken, to_write, after_write, per_wake = analyse(evs, busiest_waiter(evs, proxy))
        n = sum(len(v) for v in woken.values()) or 1
        cell = lambda k: (f"{len(woken.get(k, [])) / n:.0%}, {us(pct(woken.get(k, []), .5))} / {us(pct(woken.get(k, []), .9))}"
                          if woken.get(k) else "0%")
        print(row + f" {cell('idle')} | {cell('busy')} | {us(pct(to_write, .5))} / {us(pct(to_write, .9))} | "
              f"{us(pct(after_write, .5))} | {pct(per_wake, .5)} |", flush=True)
