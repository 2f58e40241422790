#!/usr/bin/env bash
# Runs every surge test on a fresh machine, installing what the tests need
# first. Anything missing makes a test fail loudly; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# System packages the tests need: Python with venv for the peers below, a
# real redis-server for the bridge and headless Chromium for the browser
# interop test.
APT_UPDATED=
need_apt() {
    local cmd=$1 pkg=$2
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "==> installing $pkg"
        [[ -n $APT_UPDATED ]] || { apt-get update -qq; APT_UPDATED=1; }
        apt-get install -y -qq "$pkg"
    fi
}
need_apt python3 python3
# Debian ships venv (and the pip it bootstraps) separately.
if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    echo "==> installing python3-venv"
    [[ -n $APT_UPDATED ]] || { apt-get update -qq; APT_UPDATED=1; }
    apt-get install -y -qq python3-venv
fi
need_apt redis-server redis-server
# A real HAProxy balances Engine.IO sessions over two nodes in
# tests/engineio_haproxy.rs, running tuning/haproxy-engineio.cfg.
need_apt haproxy haproxy
need_apt chromium chromium
# Node runs clients/js/surge.js in tests/js_client.rs; Debian's nodejs
# ships npm separately.
need_apt node nodejs
need_apt npm npm
# Tests signal servers with kill(1).
need_apt kill procps
# tests/server_api.rs drives the server API with curl as well as ureq.
need_apt curl curl

# Python peers: kosoku drives the Autobahn TestSuite cases; websockets is a
# real client implementation to interoperate with; python-socketio (with the
# transports it needs, pinned) is the stock Python Socket.IO client; PyJWT
# (with cryptography) signs the tokens tests/jwt.rs verifies.
PY_PACKAGES=(kosoku==0.1.0 websockets==17.4 "python-socketio[client]==5.18.1" python-engineio==4.15.1
    requests==2.34.2 websocket-client==1.9.2 "PyJWT[crypto]==2.15.1")
VENV="$ROOT/.venv"
STAMP="$VENV/.surge-packages"
if [[ ! -x "$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null)" != "${PY_PACKAGES[*]}" ]]; then
    echo "==> creating $VENV with ${PY_PACKAGES[*]}"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "${PY_PACKAGES[@]}"
    echo "${PY_PACKAGES[*]}" > "$STAMP"
fi
export SURGE_VENV="$VENV"

# The npm ws package: a WebSocket for Node before 22, and the one that shows
# a refused upgrade's response (Retry-After) to the client under test.
JS_TEST="$ROOT/clients/js/test"
if [[ "$(node -p 'require(process.argv[1]).version' "$JS_TEST/node_modules/ws/package.json" 2>/dev/null)" \
    != "$(node -p 'require(process.argv[1]).dependencies.ws' "$JS_TEST/package.json")" ]]; then
    echo "==> installing the npm ws package into $JS_TEST"
    npm install --prefix "$JS_TEST" --no-package-lock --no-audit --no-fund --silent
fi

# The Engine.IO ground truth: the stock engine.io-client (and the reference
# server the checks were written against), pinned by its package-lock.json.
EIO_TEST="$ROOT/tests/engineio"
if [[ "$(node -p 'require(process.argv[1]).version' "$EIO_TEST/node_modules/engine.io-client/package.json" 2>/dev/null)" \
    != "$(node -p 'require(process.argv[1]).dependencies["engine.io-client"]' "$EIO_TEST/package.json")" ]]; then
    echo "==> installing engine.io-client into $EIO_TEST"
    npm ci --prefix "$EIO_TEST" --no-audit --no-fund --silent
fi

# The Socket.IO ground truth: the stock socket.io-client (and the reference
# server), pinned by tests/socketio/package-lock.json.
SIO_TEST="$ROOT/tests/socketio"
if [[ "$(node -p 'require(process.argv[1]).version' "$SIO_TEST/node_modules/socket.io-client/package.json" 2>/dev/null)" \
    != "$(node -p 'require(process.argv[1]).dependencies["socket.io-client"]' "$SIO_TEST/package.json")" ]]; then
    echo "==> installing socket.io-client into $SIO_TEST"
    npm ci --prefix "$SIO_TEST" --no-audit --no-fund --silent
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "==> cargo doc (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "==> cargo test (debug: overflow checks and debug assertions on)"
cargo test --all-targets
echo "==> cargo test --release (the Autobahn suite and stress tests at full speed)"
cargo test --release --test autobahn --test reset_stress --test pubsub --test bridge --test flood \
    --test chromium --test engineio --test engineio_haproxy --test socketio
# The real-socket suite once more on every driver x shard combination;
# tests that pin a driver or shard count themselves keep it.
for backend in epoll uring; do
    for shards in 1 2; do
        echo "==> integration suite: backend=$backend shards=$shards"
        SURGE_TEST_BACKEND=$backend SURGE_TEST_SHARDS=$shards \
            cargo test --release --test handshake --test framing --test python_websockets --test load \
                --test admission --test deflate --test config --test metrics --test events
    done
done
echo "==> all tests passed"
