#!/bin/bash
# Full TLS 1.3 handshakes (ECDSA P-256 certificate, new session each time)
# against `surge echo --tls-cert/--tls-key`: `openssl s_time -new` on core 1,
# one shard on core 0; server CPU (utime+stime) per handshake, per driver.
#
# Usage: bash benches/tls_handshakes.sh [SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-5}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
TICK="$(getconf CLK_TCK)"
for backend in uring epoll; do
    taskset -c 0 "$ROOT/target/release/surge" echo --listen 127.0.0.1:9443 --shards 1 \
        --backend "$backend" --max-conns-per-ip 0 \
        --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem" 2>/dev/null &
    server=$!
    sleep 0.5
    before=$(awk '{print $14 + $15}' "/proc/$server/stat")
    line=$(taskset -c 1 openssl s_time -connect 127.0.0.1:9443 -new -time "$SECS" 2>&1 \
        | grep -m1 "connections in")
    after=$(awk '{print $14 + $15}' "/proc/$server/stat")
    kill "$server"
    wait "$server" 2>/dev/null || true
    count=${line%% *}
    echo "$backend: $line; server CPU per handshake:" \
        "$(awk -v t=$((after - before)) -v n="$count" -v hz="$TICK" 'BEGIN {printf "%.1f us", t / hz / n * 1e6}')"
done
