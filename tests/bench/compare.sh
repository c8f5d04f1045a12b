#!/usr/bin/env bash
# One run, three paths: client → mock directly; client → nginx → mock; client → railgate → mock.
# Prints one table (absolute figures, ratios to direct and to nginx). Takes ~13 minutes.
#   tests/bench/compare.sh            # everything
#   tests/bench/compare.sh a b        # only some workloads (a, a+, b, c, d, e, f, g, h)
#   tests/bench/compare.sh soak       # 10,000 idle + 1,000 active SSE streams, 10 minutes (not in "everything")
#   tests/bench/compare.sh hops       # (b)'s load traced (perf): where a proxy hop's latency goes (not in "everything")
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p railgate -p railgate-upstream-mock -p railgate-tests --bin railgate --bin upstream-mock --bin railgate-load --bin bare-proxy >&2
exec python3 tests/bench/compare.py "$@"
