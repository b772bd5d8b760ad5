#!/usr/bin/env bash
# `qzx bench` on the embedded broker with one fix to librdkafka's mock
# cluster: it finds the message set a fetch asks for from the newest end of
# the partition's log instead of the oldest (patches/ holds the diff).
#
# Why: the stock mock walks the whole retained log (up to 5 MB per
# partition) on every fetch that returns data, on its one thread, so its
# cost grows with the log and not with the load. This script shows what the
# system does on a broker whose fetch does not (README, Benchmark). It is an
# experiment, not how qzx ships: the build it makes goes to its own target
# directory, and the repository's Cargo.lock is left as it was.
#
# Arguments go to `qzx bench` (e.g. `scripts/bench-patched-mock.sh --json`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target="$repo/target/patched-mock"
patch_file="$repo/scripts/patches/librdkafka-mock-fetch-from-newest.patch"

log() { printf 'bench-patched-mock.sh: %s\n' "$*" >&2; }

cd "$repo"
source_dir=$(cargo metadata --format-version 1 --locked |
  python3 -c 'import json, sys, os
pkgs = json.load(sys.stdin)["packages"]
print(os.path.dirname(next(p["manifest_path"] for p in pkgs if p["name"] == "rdkafka-sys")))')
# One copy per rdkafka-sys version: after an upgrade the patch is applied
# afresh, and fails loudly if it no longer fits.
patched="$target/$(basename "$source_dir")"
if [ ! -f "$patched/.patched" ]; then
  log "copying $(basename "$source_dir") and patching its mock cluster"
  rm -rf "$patched"
  mkdir -p "$target"
  cp -a "$source_dir" "$patched"
  patch --quiet -p1 -d "$patched/librdkafka" <"$patch_file"
  touch "$patched/.patched"
fi

# Cargo records a patched dependency in the lock file; keep the
# repository's own.
cp Cargo.lock "$target/Cargo.lock.orig"
trap 'cp "$target/Cargo.lock.orig" "$repo/Cargo.lock"' EXIT
log "building qzx against the patched mock (own target directory; minutes the first time)"
cargo build --release --bin qzx --target-dir "$target" \
  --config "patch.crates-io.rdkafka-sys.path=\"$patched\"" >&2
cp "$target/Cargo.lock.orig" Cargo.lock

"$target/release/qzx" bench "$@"
