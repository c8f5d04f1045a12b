"""A chat backend written with third-party Python stacks, for railgate's foreign-peer suite.

starlette routes, sse-starlette's EventSourceResponse for SSE, and uvicorn serving WebSockets
through the `websockets` package. Nothing here was written for railgate's own mock: event ids
are opaque (`--ids`), data may be non-JSON or multi-line, lines may end in CRLF (`--crlf`),
each stream opens with a `retry` field and a comment, and the state is durable (an fsync'd
JSON-lines log per thread in `--data`), so the process can be SIGKILLed and restarted on the
same port and resume from `Last-Event-ID`.

    backend.py --listen 127.0.0.1:0 --data DIR [--ids STYLE] [--crlf] [--keep-alive SECONDS]

Prints `READY listen=HOST:PORT` once it accepts connections.

ID styles (the n-th event of a thread, n from 1; the same after a restart):
  numeric     1, 2, 3, ...
  hex         6 hex digits of sha256(thread:n): no order at all
  ulid        26-character ULIDs, increasing as text
  random64    a random unsigned 64-bit number (sha256-derived), in decimal
  decreasing  10^12 - n
  list:A,B,C  the given ids, in order (then A.1, B.1, ...)

HTTP API (test levers under /_peer):
  POST /_peer/threads          {"tenant_id","env","project_id"?} -> {"id"}
  POST /_peer/publish          {"thread_id","count"} or {"thread_id","data":[str,...]} -> {"ids"};
                               with "raw": true a WebSocket gets each data as the message itself
  GET  /_peer/events/{id}      every event's data, as stored (what clients sent included)
  GET  /registry/threads/{id}  owner, or 404
  POST /chat/threads           a new thread of X-Tenant-Id, or — naively — echoes {"id"} it is sent
  *    /chat/threads/{id}/...  echoes the thread and path it was asked for, and the port of the
                               connection it came on; with ?chunks=N the same as N pieces of a
                               streamed (chunked) answer
  GET  /sse/chat/{id}          events after Last-Event-ID (410 if unknown), then live
  WS   /ws/chat/{id}           hello {"type":"hello","last_event_id"}, then events as
                               {"id","data"}; a client's text message is published as an event
"""

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys

import uvicorn
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def event_id(style, thread, n):
    digest = hashlib.sha256(f"{thread}:{n}".encode()).hexdigest()
    if style == "numeric":
        return str(n)
    if style == "hex":
        return digest[:6]
    if style == "random64":
        return str(int(digest[:16], 16))
    if style == "decreasing":
        return str(10**12 - n)
    if style == "ulid":
        value = (1_700_000_000_000 + n) << 80 | int(digest[:20], 16)
        return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))
    if style.startswith("list:"):
        ids = style[len("list:"):].split(",")
        base = ids[(n - 1) % len(ids)]
        rounds = (n - 1) // len(ids)
        return base if rounds == 0 else f"{base}.{rounds}"
    raise ValueError(f"unknown id style {style}")


class Store:
    """Threads and their events, in fsync'd JSON-lines files; a torn last line is ignored."""

    def __init__(self, data, style):
        self.data = data
        self.style = style
        self.threads = {}
        self.events = {}
        self.changed = {}
        os.makedirs(data, exist_ok=True)
        for rec in self._read("threads.jsonl"):
            self.threads[rec["id"]] = rec
        for thread in self.threads:
            self.events[thread] = list(self._read(f"events-{thread}.jsonl"))

    def _read(self, name):
        path = os.path.join(self.data, name)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return

    def _append(self, name, records):
        with open(os.path.join(self.data, name), "a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def create_thread(self, owner):
        thread = "th-" + os.urandom(6).hex()
        rec = dict(owner, id=thread)
        self._append("threads.jsonl", [rec])
        self.threads[thread] = rec
        self.events[thread] = []
        return thread

    def publish(self, thread, datas, raw=False):
        log = self.events[thread]
        recs = []
        for data in datas:
            n = len(log) + len(recs) + 1
            recs.append({"id": event_id(self.style, thread, n), "data": data, "raw": raw})
        self._append(f"events-{thread}.jsonl", recs)
        log.extend(recs)
        self.condition(thread).notify_all_soon()
        return [r["id"] for r in recs]

    def condition(self, thread):
        if thread not in self.changed:
            self.changed[thread] = Changed()
        return self.changed[thread]

    def after(self, thread, cursor):
        """Index of the first event after `cursor`, or None when the cursor is unknown."""
        log = self.events[thread]
        if not cursor:
            return 0
        for i, rec in enumerate(log):
            if rec["id"] == cursor:
                return i + 1
        return None


class Changed:
    """Wakes every waiter when a thread's log grows."""

    def __init__(self):
        self.event = asyncio.Event()

    def notify_all_soon(self):
        self.event.set()
        self.event = asyncio.Event()

    def current(self):
        """Take this before reading the log, then `wait` on it: no publish falls in between."""
        return self.event

    @staticmethod
    async def wait(event, timeout):
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def build_app(store, crlf):
    async def create_thread(request: Request):
        body = await request.json()
        owner = {k: body[k] for k in ("tenant_id", "env", "project_id") if k in body}
        return JSONResponse({"id": store.create_thread(owner)}, status_code=201)

    async def publish(request: Request):
        body = await request.json()
        thread = body["thread_id"]
        if thread not in store.threads:
            return JSONResponse({"error": "no such thread"}, status_code=404)
        datas = body.get("data")
        if datas is None:
            start = len(store.events[thread])
            datas = [json.dumps({"text": f"message {start + i + 1}"}) for i in range(body["count"])]
        return JSONResponse({"ids": store.publish(thread, datas, raw=body.get("raw", False))})

    async def events(request: Request):
        thread = request.path_params["id"]
        return JSONResponse([rec["data"] for rec in store.events.get(thread, [])])

    async def create_chat_thread(request: Request):
        # A naive backend: it echoes an id the client names instead of checking who owns it.
        body = await request.json()
        if "id" in body:
            return JSONResponse({"id": body["id"]}, status_code=201)
        owner = {"tenant_id": request.headers.get("x-tenant-id"), "env": request.headers.get("x-env")}
        return JSONResponse({"id": store.create_thread(owner)}, status_code=201)

    async def messages(request: Request):
        answer = {
            "thread_id": request.path_params["id"],
            "path": request.url.path,
            "peer_port": request.client.port,
        }
        chunks = int(request.query_params.get("chunks", "0"))
        if chunks <= 0:
            return JSONResponse(answer)
        text = json.dumps(answer).encode()
        size = -(-len(text) // chunks)

        async def pieces():
            for at in range(0, len(text), size):
                yield text[at : at + size]

        return StreamingResponse(pieces(), media_type="application/json")

    async def registry(request: Request):
        rec = store.threads.get(request.path_params["id"])
        if rec is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({k: v for k, v in rec.items() if k != "id"})

    async def sse(request: Request):
        thread = request.path_params["id"]
        if thread not in store.threads:
            return JSONResponse({"error": "no such thread"}, status_code=404)
        start = store.after(thread, request.headers.get("last-event-id"))
        if start is None:
            return JSONResponse({"error": "cursor unknown"}, status_code=410)

        async def events():
            yield ServerSentEvent(retry=1000, comment="foreign peer")
            i = start
            while True:
                changed = store.condition(thread).current()
                log = store.events[thread]
                while i < len(log):
                    yield ServerSentEvent(data=log[i]["data"], id=log[i]["id"], event="message")
                    i += 1
                if await request.is_disconnected():
                    return
                await Changed.wait(changed, 0.5)

        return EventSourceResponse(events(), sep="\r\n" if crlf else "\n", ping=600)

    async def ws(websocket: WebSocket):
        thread = websocket.path_params["id"]
        if thread not in store.threads:
            await websocket.close(code=4004)
            return
        await websocket.accept()
        try:
            hello = json.loads(await websocket.receive_text())
        except (json.JSONDecodeError, WebSocketDisconnect):
            return
        start = store.after(thread, hello.get("last_event_id"))
        if start is None:
            await websocket.send_text(json.dumps({"error": {"code": "chat.cursor_invalid"}}))
            await websocket.close(code=4010)
            return

        async def pump():
            i = start
            while True:
                changed = store.condition(thread).current()
                log = store.events[thread]
                while i < len(log):
                    rec = log[i]
                    if rec.get("raw"):
                        await websocket.send_text(rec["data"])
                    else:
                        await websocket.send_text(json.dumps({"id": rec["id"], "data": rec["data"]}))
                    i += 1
                await Changed.wait(changed, 0.5)

        sender = asyncio.create_task(pump())
        try:
            while True:
                store.publish(thread, [await websocket.receive_text()])
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()

    return Starlette(
        routes=[
            Route("/_peer/threads", create_thread, methods=["POST"]),
            Route("/_peer/publish", publish, methods=["POST"]),
            Route("/_peer/events/{id}", events),
            Route("/registry/threads/{id}", registry),
            Route("/chat/threads", create_chat_thread, methods=["POST"]),
            Route("/chat/threads/{id}/{rest:path}", messages, methods=["GET", "POST"]),
            Route("/sse/chat/{id}", sse),
            WebSocketRoute("/ws/chat/{id}", ws),
        ]
    )


def listening_socket(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def server_config(app, keep_alive, **tls):
    return uvicorn.Config(
        app,
        ws="websockets-sansio",
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=keep_alive,
        # The connection's own address, not the one X-Forwarded-For names.
        proxy_headers=False,
        **tls,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ids", default="numeric")
    parser.add_argument("--crlf", action="store_true")
    parser.add_argument("--keep-alive", type=int, default=5, help="idle keep-alive, seconds")
    parser.add_argument("--tls-cert", help="also serve TLS (Python's ssl) on a second port")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    sock = listening_socket(host, int(port))
    store = Store(args.data, args.ids)
    app = build_app(store, args.crlf)
    servers = [(uvicorn.Server(server_config(app, args.keep_alive)), sock, "listen")]
    if args.tls_cert:
        tls_config = server_config(
            app, args.keep_alive, ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key
        )
        servers.append((uvicorn.Server(tls_config), listening_socket(host, 0), "tls"))

    async def serve():
        tasks = [asyncio.create_task(srv.serve(sockets=[s])) for srv, s, _ in servers]
        while not all(srv.started for srv, _, _ in servers):
            await asyncio.sleep(0.01)
        bound = " ".join(f"{name}={s.getsockname()[0]}:{s.getsockname()[1]}" for _, s, name in servers)
        print(f"READY {bound}", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
