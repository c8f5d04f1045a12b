"""An SSE client built on httpx, for railgate's foreign-peer suite.

Reads `--count` dispatched events from `--url`, reconnecting after any cut with the last id
in `Last-Event-ID` (as an EventSource does), within `--timeout` seconds in all. Prints
`READY listen=-` once the first stream is open, then one `EVENT {"id","event","data"}` line
per event; exits 0 after `--count` events, 1 on timeout or a refusal (non-200 answer).

    client.py --url http://gw/sse/chat/th --header 'Authorization: Bearer …' --count 6
"""

import argparse
import json
import sys
import time

import httpx


def events(lines):
    """WHATWG event-stream parsing: yields (id, event, data) per dispatched event."""
    event, data, last_id = "", [], None
    for line in lines:
        if line == "":
            if data:
                yield last_id, event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    deadline = time.monotonic() + args.timeout
    got, last_id, ready = 0, None, False
    with httpx.Client(timeout=httpx.Timeout(5.0, read=30.0)) as client:
        while got < args.count and time.monotonic() < deadline:
            h = dict(headers)
            if last_id is not None:
                h["Last-Event-ID"] = last_id
            try:
                with client.stream("GET", args.url, headers=h) as resp:
                    if resp.status_code != 200:
                        print(f"REFUSED {resp.status_code} {resp.read().decode()}", flush=True)
                        return 1
                    if not ready:
                        print("READY listen=-", flush=True)
                        ready = True
                    for ev_id, event, data in events(resp.iter_lines()):
                        if ev_id is not None:
                            last_id = ev_id
                        if event in ("resume_cursor", "error"):
                            continue
                        print("EVENT " + json.dumps({"id": ev_id, "event": event, "data": data}), flush=True)
                        got += 1
                        if got == args.count:
                            return 0
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    return 0 if got >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
