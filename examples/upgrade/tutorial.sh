#!/usr/bin/env bash
# The README's hot-upgrade tutorial as one script (CI runs it): boot kvstore
# 1.0 as a node, store a key, upgrade the node live to 1.1 (its cache's state
# changes shape), try 1.2 (its code_change fails: the install rolls back and
# the node carries on with 1.1), go back to 1.0, then stop the node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/kvstore-releases-XXXX)
node=
cleanup() {
  [ -z "$node" ] || kill -INT "$node" 2>/dev/null || true
  [ -z "$node" ] || wait "$node" || true
  rm -rf "$work"
}
trap cleanup EXIT
cp -r "$here/1.0" "$work/"                  # the release directory holds 1.0 alone
sock="$work/control"

set -x
otpvm run kvstore_rel.store:KVStore --release-dir "$work" --control "$sock" &
node=$!
otpvm call "$sock" cache '["put", "greeting", "hello"]' --wait 30
otpvm upgrade "$sock" "$here/1.1"           # live: the cache keeps its pid and its data
otpvm call "$sock" cache '["get", "greeting"]'
if otpvm upgrade "$sock" "$here/1.2"; then exit 1; fi   # must fail, and roll back
otpvm call "$sock" cache '["get", "greeting"]'          # 1.1 still, the data intact
otpvm upgrade "$sock" 1.0                   # a downgrade: 1.1's code_change converts back
otpvm call "$sock" cache '["get", "greeting"]'
otpvm releases "$sock"
