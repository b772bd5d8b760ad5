#!/usr/bin/env bash
# The qzx test command (README: "Run the tests").
#
# Installs what is missing (redis-server and mosquitto from Debian, the
# tansu Kafka-protocol broker from crates.io, cached in ~/.cargo/bin),
# starts each on a free loopback port in .test-stack/, runs the whole
# workspace's tests against them, and stops them whatever happens.
# Services already running on this machine are never used.
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p router`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
stack="$repo/.test-stack"
TANSU_VERSION=0.6.0

log() { printf 'test.sh: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { log "installing mosquitto"; apt_install mosquitto; }
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  if [ ! -x "$TANSU" ]; then
    # About 15 minutes on 2 cores, once per machine: the binary is cached
    # in ~/.cargo/bin.
    log "installing tansu $TANSU_VERSION (real Kafka-protocol broker; slow, once)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --quiet
    TANSU="$HOME/.cargo/bin/tansu"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local name=$1 port=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port; its log:"
  cat "$stack/$name.log" >&2 || true
  return 1
}

pids=()
stop_stack() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
}
trap stop_stack EXIT INT TERM

start_stack() {
  rm -rf "$stack"
  mkdir -p "$stack"

  local redis_port kafka_port mqtt_port
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$stack" >"$stack/redis.log" 2>&1 &
  pids+=($!)

  kafka_port=$(free_port)
  # tansu at info logs every request: gigabytes in minutes.
  RUST_LOG=warn "$TANSU" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$stack/tansu.log" 2>&1 &
  pids+=($!)

  mqtt_port=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" >"$stack/mosquitto.conf"
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$stack/mosquitto.conf" >"$stack/mosquitto.log" 2>&1 &
  pids+=($!)

  wait_for_port redis "$redis_port"
  wait_for_port tansu "$kafka_port"
  wait_for_port mosquitto "$mqtt_port"

  export TEST_STACK=1
  export TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  export TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
  export TEST_MQTT_URL="mqtt://127.0.0.1:$mqtt_port"
  log "redis $TEST_REDIS_URL, kafka (tansu) $TEST_KAFKA_BROKERS, mqtt $TEST_MQTT_URL"
}

cd "$repo"
ensure_tools
start_stack
# Tests create their own topics under random prefixes (tansu does not
# auto-create topics), so the broker starts empty.
if [ $# -gt 0 ]; then
  cargo test --locked "$@"
  exit
fi
cargo test --workspace --locked

# The board and terminal in real headless Chromium, against a real
# `qzx all` (the binary cargo just built for the tests) on the same broker
# and Redis, then the page behaviour against a mock. playwright-core drives
# Debian's chromium; it downloads no browser.
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium and CJK fonts"
  apt_install chromium fonts-noto-cjk
fi
(
  cd "$repo/tests/browser"
  npm ci --no-audit --no-fund --loglevel=error
  QZX_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/qzx" npm test
)
