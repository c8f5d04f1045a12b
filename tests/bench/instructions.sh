#!/usr/bin/env bash
# Instructions the gateway executes in user space per HTTP-rail request, counted by valgrind's
# callgrind: repeatable within ~0.2% between runs, where wall-clock and CPU-time figures move by
# several percent. Starts the mock and one gateway (one worker) under callgrind, warms up with
# wrk, zeroes the counters, sends ~8 s of requests (10 connections) and prints the count.
#   tests/bench/instructions.sh [SECONDS]      # keeps the profile in $TMPDIR for callgrind_annotate
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p railgate -p railgate-upstream-mock --bin railgate --bin upstream-mock >&2
REL=$PWD/target/release
DIR=$(mktemp -d)
SECRET=bench-jwt-secret-0123456789
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ready() { # FILE: waits up to 60 s for its READY line, prints listen=
  for _ in $(seq 600); do
    if grep -q READY "$1" 2>/dev/null; then grep -o 'listen=[^ ]*' "$1" | head -1 | cut -d= -f2; return 0; fi
    sleep 0.1
  done
  echo "no READY in $1" >&2; return 1
}
"$REL/upstream-mock" --listen 127.0.0.1:0 >"$DIR/mock.out" 2>"$DIR/mock.err" &
pids+=($!)
MOCK=$(ready "$DIR/mock.out")
TOK=$(AUTH_JWT_SIGNING=$SECRET "$REL/railgate" token --tenant t_bench --sub bench --ttl 2h)
TH=$(curl -sf -m 5 -XPOST "http://$MOCK/chat/threads" -H 'X-Tenant-Id: t_bench' -H 'X-Project-Id: p_chat' -d '{"title":"b"}' \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
cat >"$DIR/gw.toml" <<T
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
upstream = "http://$MOCK"
workers = 1
[limits]
upstream_idle_timeout_s = 300
[[routes]]
name = "chat-http"
path = "/chat/threads/{thread_id}/**"
kind = "http"
require = ["tenant"]
T
AUTH_JWT_SIGNING=$SECRET ENGINES_TICKET_SECRET=t RUST_LOG=warn valgrind --tool=callgrind \
  --callgrind-out-file="$DIR/callgrind.out" "$REL/railgate" serve --config "$DIR/gw.toml" \
  >"$DIR/gw.out" 2>"$DIR/gw.err" &
pids+=($!)
GW=$(ready "$DIR/gw.out")
URL="http://$GW/chat/threads/$TH/messages"
H=(-H "Authorization: Bearer $TOK" -H "X-Tenant-Id: t_bench")
wrk -t1 -c10 -d3s "${H[@]}" "$URL" >/dev/null
callgrind_control -z "$REL/railgate" >/dev/null 2>&1
N=$(wrk -t1 -c10 -d"${1:-8}"s "${H[@]}" "$URL" | awk '/requests in/{print $1}')
callgrind_control -d "$REL/railgate" >/dev/null 2>&1
PROFILE=$(ls -t "$DIR"/callgrind.out.* | head -1)
IR=$(callgrind_annotate "$PROFILE" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "requests=$N instructions=$IR per_request=$((IR / N)) profile=$PROFILE"
