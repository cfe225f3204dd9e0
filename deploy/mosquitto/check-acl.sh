#!/usr/bin/env bash
# Checks deploy/mosquitto/mosquitto.conf and acl.example against a real Mosquitto 2.0:
# the config loads, and the ACL lets each identity do exactly what acl.example promises.
#
# The TLS listener is replaced by a plain one on a free loopback port (no certificates
# needed), paths point into a temporary directory, and the broker is stopped on exit.
# Needs: mosquitto, mosquitto-clients, python3. Usage: deploy/mosquitto/check-acl.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/alarmnet-acl.XXXXXX)
broker_pid=""
cleanup() {
    if [[ -n $broker_pid ]]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

sed -e "s#^listener 8883\$#listener $port 127.0.0.1#" \
    -e "s#^listener 1883 127.0.0.1\$#listener 0 $dir/local.sock#" \
    -e 's#^\(cafile\|certfile\|keyfile\|crlfile\|tls_version\|require_certificate\|use_identity_as_username\) #\#&#' \
    -e "s#^pid_file .*#pid_file $dir/mosquitto.pid#" \
    -e "s#^persistence_location .*#persistence_location $dir/#" \
    -e "s#^log_dest .*#log_dest file $dir/mosquitto.log#" \
    -e "s#^password_file .*#password_file $dir/passwd#" \
    -e "s#^acl_file .*#acl_file $dir/acl#" \
    "$here/mosquitto.conf" >"$dir/mosquitto.conf"
# Enable the optional operator account: it is the test's observer.
sed -e 's/^#user alarmnet-operator$/user alarmnet-operator/' \
    -e '/^user alarmnet-operator$/,$ s/^#topic /topic /' \
    "$here/acl.example" >"$dir/acl"

users=(lz-cg-s001 lz-cg-s002 alarmnet-collector-1 alarmnet-operator)
touch "$dir/passwd"
for u in "${users[@]}"; do mosquitto_passwd -b "$dir/passwd" "$u" "pw-$u"; done
chmod 600 "$dir/passwd" "$dir/acl"
if [[ $(id -u) -eq 0 ]]; then
    # Started as root, Mosquitto drops to the `mosquitto` user.
    chmod 755 "$dir"
    chown mosquitto "$dir" "$dir/passwd" "$dir/acl"
fi

mosquitto -c "$dir/mosquitto.conf" >"$dir/stdout" 2>&1 &
broker_pid=$!
for _ in $(seq 50); do
    grep -q "running" "$dir/mosquitto.log" 2>/dev/null && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$dir/stdout"; echo "FAIL: broker did not start"; exit 1; }
    sleep 0.1
done

mq=(-h 127.0.0.1 -p "$port" -q 1)
pub() { local u=$1; shift; mosquitto_pub "${mq[@]}" -u "$u" -P "pw-$u" -i any "$@"; }
node=alarmnet/v1/lanzhou/lz-chengguan

# The operator watches everything while each identity publishes allowed and forbidden
# messages; payloads starting with "ok" must arrive, "no" must not.
mosquitto_sub "${mq[@]}" -u alarmnet-operator -P pw-alarmnet-operator -i operator \
    -t 'alarmnet/v1/#' -v -W 4 >"$dir/seen" 2>/dev/null &
watcher=$!
sleep 0.5
pub lz-cg-s001 -t "$node/lz-cg-s001/hb" -m ok-own-hb
pub lz-cg-s001 -r -t "$node/lz-cg-s001/birth" -m ok-own-birth
pub lz-cg-s001 -t "$node/lz-cg-s002/hb" -m no-forged-hb
pub lz-cg-s001 -t "$node/lz-cg-s001/cmd" -m no-node-writes-cmd
pub lz-cg-s001 -t 'alarmnet/v1/$alerts/_/_/_/collector_blind' -m no-node-writes-alert
pub alarmnet-collector-1 -t "$node/lz-cg-s001/cmd" -m ok-collector-cmd
pub alarmnet-collector-1 -r -t 'alarmnet/v1/$alerts/lanzhou/lz-chengguan/lz-cg-s001/node_offline' -m ok-collector-alert
pub alarmnet-collector-1 -r -t 'alarmnet/v1/$collector/alarmnet-collector-1/state' -m ok-collector-state
pub alarmnet-collector-1 -t "$node/lz-cg-s001/hb" -m no-collector-forges-hb
pub alarmnet-collector-1 -t 'alarmnet/v1/$collector/other/state' -m no-other-collector-state
wait "$watcher" || true

failed=0
expect() { # expect yes|no PAYLOAD FILE
    if grep -q " $2\$" "$3"; then found=yes; else found=no; fi
    if [[ $found != "$1" ]]; then echo "FAIL: $2 (expected delivered=$1)"; failed=1; fi
}
for p in ok-own-hb ok-own-birth ok-collector-cmd ok-collector-alert ok-collector-state; do expect yes "$p" "$dir/seen"; done
for p in no-forged-hb no-node-writes-cmd no-node-writes-alert no-collector-forges-hb no-other-collector-state; do expect no "$p" "$dir/seen"; done

# A node reads its own cmd and state (the Will), and nobody else's; the client id it
# claims does not matter: the broker replaces it with the username.
pub lz-cg-s002 -r -t "$node/lz-cg-s002/state" -m no-other-nodes-state
mosquitto_sub "${mq[@]}" -u lz-cg-s001 -P pw-lz-cg-s001 -i claimed-id -k 5 \
    --will-topic "$node/lz-cg-s001/state" --will-qos 1 --will-retain --will-payload ok-own-will \
    -t "$node/lz-cg-s001/cmd" -t "$node/lz-cg-s002/cmd" -t "$node/lz-cg-s002/state" -t 'alarmnet/v1/#' \
    -v -W 3 >"$dir/node-seen" 2>/dev/null &
reader=$!
sleep 0.5
pub alarmnet-collector-1 -t "$node/lz-cg-s001/cmd" -m ok-cmd-for-s001
pub alarmnet-collector-1 -t "$node/lz-cg-s002/cmd" -m no-cmd-for-s002
sleep 0.3
kill -9 "$reader" 2>/dev/null || true # no DISCONNECT: the broker publishes the Will
wait "$reader" 2>/dev/null || true
expect yes ok-cmd-for-s001 "$dir/node-seen"
expect no no-cmd-for-s002 "$dir/node-seen"
expect no no-other-nodes-state "$dir/node-seen"
expect no ok-collector-alert "$dir/node-seen"
mosquitto_sub "${mq[@]}" -u lz-cg-s001 -P pw-lz-cg-s001 -i x -t "$node/lz-cg-s001/state" -v -W 1 \
    >"$dir/own-state" 2>/dev/null || true
expect yes ok-own-will "$dir/own-state"

# Nobody connects without credentials.
if mosquitto_pub "${mq[@]}" -i anon -t "$node/lz-cg-s001/hb" -m anonymous 2>/dev/null; then
    echo "FAIL: an anonymous client could connect"
    failed=1
fi

if [[ $failed -ne 0 ]]; then
    echo "--- broker log"; tail -20 "$dir/mosquitto.log"
    exit 1
fi
echo "ok: mosquitto.conf loads and acl.example grants exactly what it promises (port $port)"
