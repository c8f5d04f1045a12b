#!/usr/bin/env bash
# Two railgate builds side by side on the HTTP rail: one mock, both gateways (one worker each)
# running at once, wrk (1 thread, 50 connections) against each in turn, ROUNDS pairs of SECONDS.
# Prints each build's requests/s and CPU per request (median and mean) and B's ratios to A
# pair by pair: the machine's drift from minute to minute, larger than most single changes,
# falls on both alike. (Swap A and B once: the second of a pair gains ~1-2% on this machine.)
#   tests/bench/ab.sh BINARY_A BINARY_B [ROUNDS]     # ROUNDS (10) of SECONDS (3, env) each
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B [ROUNDS]" >&2; exit 64; }
A=$(realpath "$1"); B=$(realpath "$2"); N=${3:-10}; SECS=${SECS:-3}
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p railgate -p railgate-upstream-mock --bin railgate --bin upstream-mock >&2
REL=$PWD/target/release
. tests/bench/setup.sh
gateway_config 'name = "chat-http"
path = "/chat/threads/{thread_id}/**"
kind = "http"
require = ["tenant"]'
declare -A GWP GWA
for x in A B; do
  bin=${!x}
  AUTH_JWT_SIGNING=$SECRET ENGINES_TICKET_SECRET=t RUST_LOG=warn "$bin" serve --config "$DIR/gw.toml" >"$DIR/$x.out" 2>"$DIR/$x.err" &
  GWP[$x]=$!; pids+=($!)
  GWA[$x]=$(ready "$DIR/$x.out")
done
H=(-H "Authorization: Bearer $TOK" -H "X-Tenant-Id: t_bench")
for x in A B; do wrk -t1 -c50 -d2s "${H[@]}" "http://${GWA[$x]}/chat/threads/$TH/messages" >/dev/null; done
for i in $(seq "$N"); do
  for x in A B; do
    p=${GWP[$x]}
    T0=$(awk '{print $14+$15}' /proc/$p/stat)
    R=$(wrk -t1 -c50 -d${SECS}s "${H[@]}" "http://${GWA[$x]}/chat/threads/$TH/messages" | awk '/Requests\/sec/{print $2}')
    T1=$(awk '{print $14+$15}' /proc/$p/stat)
    echo "$x $R $(( T1 - T0 ))"
  done
done | python3 -c "
import sys,statistics as st
rows=[l.split() for l in sys.stdin]
secs=$SECS
tick_us=1e6/$(getconf CLK_TCK)
d={'A':[], 'B':[]}
for x,r,t in rows:
    r=float(r); d[x].append((r, int(t)*tick_us/(r*secs)))
for x in 'AB':
    rs=[a for a,_ in d[x]]; us=[b for _,b in d[x]]
    print(x, 'rps median %.0f mean %.0f' % (st.median(rs), st.mean(rs)), 'cpu_us median %.2f mean %.2f' % (st.median(us), st.mean(us)))
pr=[b[0]/a[0] for a,b in zip(d['A'],d['B'])]; pu=[b[1]/a[1] for a,b in zip(d['A'],d['B'])]
print('B/A rps median %.3f mean %.3f; cpu median %.3f mean %.3f' % (st.median(pr), st.mean(pr), st.median(pu), st.mean(pu)))
"
