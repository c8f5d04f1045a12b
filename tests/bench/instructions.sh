#!/usr/bin/env bash
# Instructions the gateway executes in user space per HTTP-rail request or per SSE delivery,
# counted by valgrind's callgrind: repeatable within ~0.2% between runs, where wall-clock and
# CPU-time figures move by several percent. Starts the mock and one gateway (one worker) under
# callgrind, warms up, zeroes the counters, runs the load and prints the count.
#   tests/bench/instructions.sh [SECONDS]      # HTTP rail: ~SECONDS (8) of wrk, 10 connections
#   tests/bench/instructions.sh sse [SECONDS]  # 50 private SSE streams of one thread, 100 events/s
#                                              # for SECONDS (8): per delivery
#   tests/bench/instructions.sh handshakes [SECONDS]  # new SSE streams of one thread (each its
#                                              # own upstream stream, the default), 8 at a
#                                              # time, each closed once its head arrives, for
#                                              # SECONDS (8): per stream
# The profile stays in $TMPDIR for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=http
case "${1:-}" in sse | handshakes) MODE=$1; shift ;; esac
SECS=${1:-8}
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p railgate -p railgate-upstream-mock -p railgate-tests \
  --bin railgate --bin upstream-mock --bin railgate-load >&2
REL=$PWD/target/release
. tests/bench/setup.sh
ROUTE='name = "chat-http"
path = "/chat/threads/{thread_id}/**"
kind = "http"
require = ["tenant"]'
[ "$MODE" = handshakes ] && ROUTE='name = "chat-sse"
path = "/sse/chat/{thread_id}"
kind = "sse"
require = ["tenant", "mode", "project", "app"]'
[ "$MODE" = sse ] && ROUTE='name = "chat-sse"
path = "/sse/chat/{thread_id}"
kind = "sse"
share_upstream = false
require = ["tenant", "mode", "project", "app"]'
gateway_config "$ROUTE"
AUTH_JWT_SIGNING=$SECRET ENGINES_TICKET_SECRET=t RUST_LOG=warn valgrind --tool=callgrind \
  --callgrind-out-file="$DIR/callgrind.out" "$REL/railgate" serve --config "$DIR/gw.toml" \
  >"$DIR/gw.out" 2>"$DIR/gw.err" &
pids+=($!)
GW=$(ready "$DIR/gw.out")
profile() { ls -t "$DIR"/callgrind.out.* | head -1; }
total() { # the instructions since the counters were zeroed
  callgrind_control -d "$REL/railgate" >/dev/null 2>&1
  callgrind_annotate "$(profile)" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'
}
if [ "$MODE" = http ]; then
  URL="http://$GW/chat/threads/$TH/messages"
  H=(-H "Authorization: Bearer $TOK" -H "X-Tenant-Id: t_bench")
  wrk -t1 -c10 -d3s "${H[@]}" "$URL" >/dev/null
  callgrind_control -z "$REL/railgate" >/dev/null 2>&1
  N=$(wrk -t1 -c10 -d"${SECS}"s "${H[@]}" "$URL" | awk '/requests in/{print $1}')
  IR=$(total)
  echo "requests=$N instructions=$IR per_request=$((IR / N)) profile=$(profile)"
  exit 0
fi
SSE_HEADERS=(--header "Authorization: Bearer $TOK" --header "X-Tenant-Id: t_bench" --header "X-Mode: lab"
  --header "X-Project-Id: p_chat" --header "X-App-Id: app-chat")
if [ "$MODE" = handshakes ]; then
  opened() { # SECONDS READY-FILE: prints how many streams were opened
    "$REL/railgate-load" handshakes --target "$GW" --threads "$TH" --per-thread 1 --duration "$1" \
      --concurrency 8 --ready-file "$2" "${SSE_HEADERS[@]}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["handshakes"])'
  }
  opened 3 "$DIR/warm" >/dev/null
  callgrind_control -z "$REL/railgate" >/dev/null 2>&1
  N=$(opened "$SECS" "$DIR/ready")
  IR=$(total)
  echo "streams=$N instructions=$IR per_stream=$((IR / N)) profile=$(profile)"
  exit 0
fi
CLIENTS=50 RATE=100
publish() { # COUNT: paced at RATE per second; returns at once
  curl -sf -m 5 -XPOST "http://$MOCK/_mock/publish" \
    -d "{\"thread_id\":\"$TH\",\"count\":$1,\"rate_per_s\":$RATE}" >/dev/null
}
"$REL/railgate-load" sse --target "$GW" --threads "$TH" --per-thread "$CLIENTS" \
  --duration $((SECS + 60)) --ready-file "$DIR/ready" --watch "self=$$" "${SSE_HEADERS[@]}" >"$DIR/load.json" &
pids+=($!)
for _ in $(seq 1200); do [ -f "$DIR/ready" ] && break; sleep 0.1; done
[ -f "$DIR/ready" ] || { echo "the SSE clients did not connect" >&2; exit 1; }
delivered() { curl -sf -m 5 "http://$(grep -o 'admin=[^ ]*' "$DIR/gw.out" | head -1 | cut -d= -f2)/metrics" \
  | awk '/^railgate_events_forwarded_total\{.*transport="sse"/{s+=$2} END{printf "%d", s}'; }
wait_for() { # COUNT [INTERVAL]: until the gateway has forwarded COUNT events in all, looking
  # every INTERVAL (0.1) seconds, 10 minutes at most. Each look renders /metrics inside the
  # gateway (~270,000 instructions under callgrind): the counted part looks once a second.
  local every=${2:-0.1} until=$((SECONDS + 600))
  while [ "$SECONDS" -lt "$until" ]; do [ "$(delivered)" -ge "$1" ] && return 0; sleep "$every"; done
  echo "only $(delivered) of $1 events forwarded" >&2; return 1
}
publish 20
wait_for $((CLIENTS * 20))
callgrind_control -z "$REL/railgate" >/dev/null 2>&1
publish $((RATE * SECS))
wait_for $((CLIENTS * (20 + RATE * SECS))) 1
IR=$(total)
N=$((CLIENTS * RATE * SECS))
echo "deliveries=$N instructions=$IR per_delivery=$((IR / N)) profile=$(profile)"
