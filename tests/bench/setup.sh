# Sourced by the benchmark scripts that start their own mock: the run's directory, the processes
# to stop on exit, `ready`, the mock (MOCK), a token (TOK) and a thread (TH) of tenant t_bench,
# and `gateway_config ROUTE` (a one-worker gateway in front of the mock, $DIR/gw.toml).
# Expects REL (the release binaries' directory).
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
gateway_config() { # ROUTE: the [[routes]] table's lines
  cat >"$DIR/gw.toml" <<T
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
upstream = "http://$MOCK"
workers = 1
[limits]
upstream_idle_timeout_s = 300
[[routes]]
$1
T
}
