#!/bin/bash
# Upgrades per second on one shard (core 0) with no token, an HS256 token
# (alone, and counted per user under --max-conns-per-user) and an ES256 token, `surge load connect` on core 1, ROUNDS rounds side by
# side. Keys and tokens come from PyJWT (tests/py/jwt_tokens.py, the test
# venv); every upgrade verifies its token.
#
# Usage: bash benches/jwt_upgrades.sh [ROUNDS] [SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${1:-3}"
SECS="${2:-4}"
SURGE="$ROOT/target/release/surge"
cargo build --release --quiet --bin surge --manifest-path "$ROOT/Cargo.toml"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$ROOT/.venv/bin/python" "$ROOT/tests/py/jwt_tokens.py" "$DIR" "$(date +%s)" >/dev/null
token() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$DIR/tokens.json" "$1"; }
HS="$(token hs_valid)"
ES="$(token es_valid)"
for round in $(seq "$ROUNDS"); do
    for mode in none hs256 hs256-per-user es256; do
        case $mode in
            none) args=(); path=/hub ;;
            hs256) args=(--jwt-hs256-secret "$DIR/hs.secret"); path="/hub?token=$HS" ;;
            hs256-per-user) args=(--jwt-hs256-secret "$DIR/hs.secret" --max-conns-per-user 100000)
                path="/hub?token=$HS" ;;
            es256) args=(--jwt-public-key "$DIR/ec.pem"); path="/hub?token=$ES" ;;
        esac
        taskset -c 0 "$SURGE" serve --listen 127.0.0.1:9400 --shards 1 --max-conns-per-ip 0 \
            ${args[@]+"${args[@]}"} 2>/dev/null &
        pid=$!
        sleep 0.7
        result="$(taskset -c 1 "$SURGE" load connect --url "ws://127.0.0.1:9400$path" \
            --conns 32 --duration "$SECS" 2>&1 | tail -1)"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        echo "round $round $mode: $result"
    done
done
