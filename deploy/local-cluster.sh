#!/usr/bin/env bash
# The production topology of deploy/compose.yaml as processes on this
# machine, without Docker: the real Kafka-protocol broker (tansu), Redis,
# two ingest, two router and two api processes of the built qzx binary, each
# on its own free loopback port, all sharing one topic prefix, JWT secret
# and partition count. It is how the scale-out is shown and tested here
# (tests/deploy.rs, `local_cluster_scales_out_and_hands_over`).
#
#   deploy/local-cluster.sh start     start everything, wait until ready
#   deploy/local-cluster.sh status    one line per process: pid, port, state
#   deploy/local-cluster.sh stop      SIGTERM qzx (graceful drain), then the rest
#   deploy/local-cluster.sh kill NAME [TERM]  SIGKILL (or SIGTERM) one process,
#                                         e.g. router-1
#   deploy/local-cluster.sh restart NAME  start NAME again on its port; for
#                                         redis that is an empty Redis
#
# Environment (other QZX_SECTION__KEY variables pass through to qzx):
#   QZX_BIN             the qzx binary (default: target/release/qzx)
#   TANSU               the broker (default: tansu on PATH, else ~/.cargo/bin/tansu)
#   TANSU_LOG           the broker's RUST_LOG (default warn)
#   LOCAL_CLUSTER_DIR   state, logs and pids (default: .local-cluster in the repo)
#   QZX_TOPIC_PREFIX    default: a fresh qzx-local-<random>. per start
#   QZX_JWT_SECRET      default: a fresh random secret per start
#   LOCAL_PARTITIONS    partitions of events and actions (default 10: the
#                       demo city's six jurisdiction keys hash 3 and 3 onto
#                       the two routers' halves; with 6 partitions all six
#                       land on partitions 0-2, i.e. on one router)
#
# State file: $LOCAL_CLUSTER_DIR/env, one KEY=VALUE per line (no quoting,
# no spaces), sourceable by a shell and trivial to parse from a test:
#   TOPIC_PREFIX JWT_SECRET KAFKA_BROKERS REDIS_URL PARTITIONS
#   <NAME>_PID <NAME>_PORT <NAME>_URL   for NAME in KAFKA REDIS INGEST_1
#   INGEST_2 ROUTER_1 ROUTER_2 API_1 API_2 (no _URL for KAFKA and REDIS)
#
# It only ever signals the pids it recorded, and only while they still run
# the program it started.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${LOCAL_CLUSTER_DIR:-$repo/.local-cluster}
state=$dir/env
QZX_SERVICES=(ingest-1 ingest-2 router-1 router-2 api-1 api-2)

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# NAME (ingest-1) -> state key prefix (INGEST_1)
key_of() {
  local k=${1^^}
  printf '%s' "${k//-/_}"
}

# The value of KEY in the state file, empty when absent.
get_state() {
  [ -f "$state" ] || return 0
  sed -n "s/^$1=//p" "$state" | tail -n 1
}

# Sets KEY=VALUE in the state file (replacing an older value).
set_state() {
  local tmp
  tmp=$(mktemp "$dir/env.XXXXXX")
  if [ -f "$state" ]; then grep -v "^$1=" "$state" >"$tmp" || true; fi
  printf '%s=%s\n' "$1" "$2" >>"$tmp"
  mv "$tmp" "$state"
}

# True while PID runs and its command line contains WHAT (a pid can be
# reused by an unrelated process after ours exits).
alive() {
  local pid=$1 what=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$what"
}

wait_for_port() {
  local name=$1 port=$2
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port; the end of its log:"
  tail -n 30 "$dir/$name.log" >&2 || true
  return 1
}

wait_ready() {
  local name=$1 url=$2 pid=$3
  for _ in $(seq 1 300); do
    if curl -fsS -m 2 "$url/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited; the end of its log:"
      tail -n 30 "$dir/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "$name is not ready at $url/readyz after 60 s; the end of its log:"
  tail -n 30 "$dir/$name.log" >&2 || true
  return 1
}

find_tools() {
  QZX_BIN=${QZX_BIN:-$repo/target/release/qzx}
  [ -x "$QZX_BIN" ] || die "no qzx binary at $QZX_BIN (cargo build --release, or set QZX_BIN)"
  # Absolute, so `alive` recognises the processes from any directory.
  QZX_BIN=$(cd "$(dirname "$QZX_BIN")" && pwd)/$(basename "$QZX_BIN")
  TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
  [ -x "$TANSU" ] || die "no tansu at $TANSU (scripts/test.sh installs it)"
  command -v redis-server >/dev/null || die "no redis-server (apt-get install redis-server)"
  command -v curl >/dev/null || die "no curl"
}

# Starts a detached process (its own session: it outlives this script and a
# Ctrl-C in the terminal) and records its pid.
spawn() {
  local name=$1
  shift
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  set_state "$(key_of "$name")_PID" "$!"
}

start_kafka() {
  local port=$1
  # The broker's own log level, never the caller's RUST_LOG: tansu at info
  # writes gigabytes within minutes.
  spawn kafka env RUST_LOG="${TANSU_LOG:-warn}" "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/
  wait_for_port kafka "$port"
}

# No persistence: a restart is an empty Redis, which is what the test of
# "the router rebuilds hot state from the topics" needs.
start_redis() {
  local port=$1
  spawn redis redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir"
  wait_for_port redis "$port"
}

start_qzx() {
  local name=$1 command=${1%-*} port key
  key=$(key_of "$name")
  port=$(get_state "${key}_PORT")
  if [ -z "$port" ]; then
    port=$(free_port)
    set_state "${key}_PORT" "$port"
    set_state "${key}_URL" "http://127.0.0.1:$port"
  fi
  # ingest alone listens on QZX_INGEST_LISTEN; router and api on QZX_LISTEN
  # (the router serves /healthz, /readyz and /metrics there). QZX_BIN is
  # this script's, not a configuration key: qzx refuses unknown QZX_*
  # variables, so it is removed; any other QZX_SECTION__KEY passes through.
  spawn "$name" env -u QZX_BIN \
    QZX_KAFKA_BROKERS="$(get_state KAFKA_BROKERS)" \
    QZX_REDIS_URL="$(get_state REDIS_URL)" \
    QZX_TOPIC_PREFIX="$(get_state TOPIC_PREFIX)" \
    QZX_JWT_SECRET="$(get_state JWT_SECRET)" \
    QZX_KAFKA__PARTITIONS="$(get_state PARTITIONS)" \
    QZX_LISTEN="127.0.0.1:$port" \
    QZX_INGEST_LISTEN="127.0.0.1:$port" \
    RUST_LOG="${RUST_LOG:-info}" \
    "$QZX_BIN" "$command"
}

cmd_start() {
  find_tools
  if [ -f "$state" ]; then
    for name in kafka redis "${QZX_SERVICES[@]}"; do
      if alive "$(get_state "$(key_of "$name")_PID")" ""; then
        die "already running (state in $state); stop it first"
      fi
    done
  fi
  rm -rf "$dir"
  mkdir -p "$dir"

  local suffix kafka_port redis_port
  suffix=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
  set_state TOPIC_PREFIX "${QZX_TOPIC_PREFIX:-qzx-local-$suffix.}"
  set_state JWT_SECRET "${QZX_JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
  set_state PARTITIONS "${LOCAL_PARTITIONS:-10}"
  set_state QZX_BIN "$QZX_BIN"
  set_state TANSU "$TANSU"

  kafka_port=$(free_port)
  set_state KAFKA_PORT "$kafka_port"
  set_state KAFKA_BROKERS "127.0.0.1:$kafka_port"
  redis_port=$(free_port)
  set_state REDIS_PORT "$redis_port"
  set_state REDIS_URL "redis://127.0.0.1:$redis_port/0"

  # On any failure below, leave nothing running.
  trap 'log "start failed; stopping what started"; cmd_stop' ERR
  start_kafka "$kafka_port"
  start_redis "$redis_port"
  log "kafka (tansu) 127.0.0.1:$kafka_port, redis 127.0.0.1:$redis_port, topics $(get_state TOPIC_PREFIX)*"

  # One router first: it creates the topics (tansu does not auto-create),
  # so the others do not all race to create them at once.
  for name in router-1 "${QZX_SERVICES[@]}"; do
    [ -n "$(get_state "$(key_of "$name")_PID")" ] && continue
    start_qzx "$name"
    if [ "$name" = router-1 ]; then
      wait_ready "$name" "$(get_state ROUTER_1_URL)" "$(get_state ROUTER_1_PID)"
    fi
  done
  for name in "${QZX_SERVICES[@]}"; do
    local key
    key=$(key_of "$name")
    wait_ready "$name" "$(get_state "${key}_URL")" "$(get_state "${key}_PID")"
  done
  trap - ERR
  cmd_status
  log "ready; state in $state"
}

# Graceful first: qzx drains and commits on SIGTERM (kafka.drain_timeout_ms,
# 5 s by default); whatever still runs after 15 s is killed.
stop_pids() {
  local what=$1
  shift
  local name pid pids=()
  for name in "$@"; do
    pid=$(get_state "$(key_of "$name")_PID")
    if alive "$pid" "$what"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for _ in $(seq 1 150); do
    local running=0
    for pid in "${pids[@]:-}"; do
      if alive "$pid" "$what"; then running=1; fi
    done
    [ "$running" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]:-}"; do
    if alive "$pid" "$what"; then
      log "pid $pid did not stop on SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  [ -f "$state" ] || {
    log "nothing to stop (no $state)"
    return 0
  }
  stop_pids "$(get_state QZX_BIN)" "${QZX_SERVICES[@]}"
  stop_pids redis-server redis
  stop_pids "$(get_state TANSU)" kafka
  log "stopped"
}

cmd_status() {
  [ -f "$state" ] || die "not started (no $state)"
  local name key pid port url what health
  for name in kafka redis "${QZX_SERVICES[@]}"; do
    key=$(key_of "$name")
    pid=$(get_state "${key}_PID")
    port=$(get_state "${key}_PORT")
    url=
    case $name in
      kafka) what=$(get_state TANSU) ;;
      redis) what=redis-server ;;
      *)
        what=$(get_state QZX_BIN)
        url=$(get_state "${key}_URL")
        ;;
    esac
    if ! alive "$pid" "$what"; then
      health=down
    elif [ -n "$url" ]; then
      health=$(curl -fsS -m 2 "$url/readyz" >/dev/null 2>&1 && echo ready || echo not-ready)
    else
      health=up
    fi
    printf '%-9s pid %-8s port %-6s %s\n' "$name" "${pid:--}" "${port:--}" "$health"
  done
}

cmd_kill() {
  local name=${1:?usage: local-cluster.sh kill NAME [KILL|TERM]} signal=${2:-KILL} pid
  [ -f "$state" ] || die "not started (no $state)"
  case $signal in
    KILL | TERM) ;;
    *) die "signal $signal: use KILL or TERM" ;;
  esac
  pid=$(get_state "$(key_of "$name")_PID")
  [ -n "$pid" ] || die "no process named $name"
  kill "-$signal" "$pid" 2>/dev/null || die "$name (pid $pid) is not running"
  log "sent SIG$signal to $name (pid $pid)"
}

cmd_restart() {
  local name=${1:?usage: local-cluster.sh restart NAME} key pid
  [ -f "$state" ] || die "not started (no $state)"
  find_tools
  key=$(key_of "$name")
  pid=$(get_state "${key}_PID")
  case $name in
    redis)
      stop_pids redis-server redis
      start_redis "$(get_state REDIS_PORT)"
      ;;
    kafka) die "restarting the in-memory broker would lose every topic" ;;
    *)
      [[ " ${QZX_SERVICES[*]} " == *" $name "* ]] || die "no process named $name"
      stop_pids "$(get_state QZX_BIN)" "$name"
      start_qzx "$name"
      wait_ready "$name" "$(get_state "${key}_URL")" "$(get_state "${key}_PID")"
      ;;
  esac
  log "restarted $name (was pid ${pid:--}, now $(get_state "${key}_PID"))"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) cmd_kill "${2:-}" "${3:-KILL}" ;;
  restart) cmd_restart "${2:-}" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
