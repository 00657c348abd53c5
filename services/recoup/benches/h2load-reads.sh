#!/bin/bash
# Query.GetCase against grpc.health.v1.Health/Check, measured from outside with h2load (Debian's
# nghttp2-client), on the same `recoup up` server, rounds interleaved. Build the binary first:
#   cargo build --release -p recoup && bash services/recoup/benches/h2load-reads.sh
# N (calls per round, 100000), C (connections, 4), M (streams per connection, 16), ROUNDS (3).
# h2load does not read gRPC trailers: the data bytes per call (223 for the case, 7 for health)
# show that the calls were answered with a message. Each round also prints the server's CPU per
# call (user + system of the recoup process), steadier than calls/s on a shared machine.
set -eu
BIN=${BIN:-target/release/recoup}
D=$(mktemp -d)
G=127.0.0.1:${PORT:-50161}
"$BIN" up --data-dir "$D" --grpc-addr "$G" --http-addr 127.0.0.1:0 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 1 120); do grep -q "recoup ready" "$D/log" && break; sleep 0.5; done
grep "recoup ready" "$D/log"
KEY=$(cat "$D/admin.key")
ID=$("$BIN" cases --server "http://$G" --data-dir "$D" create --reference INV-1 \
  --amount-minor 12500 --currency EUR | cut -f1)
sleep 2 # the case reaches the read model
python3 - "$ID" "$D" <<'PY'
import struct, sys
case_id, d = sys.argv[1].encode(), sys.argv[2]
request = b"\x0a" + bytes([len(case_id)]) + case_id  # GetCaseRequest.case_id
open(d + "/getcase.bin", "wb").write(b"\x00" + struct.pack(">I", len(request)) + request)
open(d + "/health.bin", "wb").write(b"\x00" + struct.pack(">I", 0))
PY
# utime + stime of the server, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
run() {
  local before after
  before=$(ticks)
  h2load -n "${N:-100000}" -c "${C:-4}" -m "${M:-16}" -t 1 \
    -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $KEY" \
    -d "$D/$2" "http://$G$1" 2>&1 | grep -E "^finished|^requests|^traffic"
  after=$(ticks)
  echo "server CPU per call: $(( (after - before) * 1000000 / $(getconf CLK_TCK) / ${N:-100000} )) µs"
}
for round in $(seq 1 "${ROUNDS:-3}"); do
  echo "== round $round: Health"
  run /grpc.health.v1.Health/Check health.bin
  echo "== round $round: GetCase"
  run /recoup.v1.Query/GetCase getcase.bin
done
