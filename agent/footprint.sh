#!/usr/bin/env bash
# Footprint of alarmnet-agent beside collectd doing comparable work, in one run.
#
#   agent/footprint.sh [DURATION_SECONDS]     (default 600 = ten minutes)
#
# Builds the release binary, reports its stripped size, starts a private Mosquitto on a
# free loopback port, then runs alarmnet-agent (10 s heartbeat, a system check) and
# collectd (cpu, memory, load, df, interface every 10 s, written out with its mqtt plugin)
# side by side, sampling RSS, anonymous memory, threads and CPU time of both from /proc
# every 10 s. Installs Debian's collectd-core if it is missing. Stops only what it started.
set -euo pipefail

DURATION=${1:-600}
SAMPLE=10
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/alarmnet-footprint.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building release alarmnet-agent"
(cd "$ROOT" && cargo build --release -p alarmnet-agent --bin alarmnet-agent 2>&1 | tail -1)
BIN="$ROOT/target/release/alarmnet-agent"
cp "$BIN" "$WORK/alarmnet-agent"
strip "$WORK/alarmnet-agent" 2>/dev/null || true
SIZE=$(stat -c %s "$WORK/alarmnet-agent")
printf 'stripped binary: %d bytes (%.2f MiB)\n' "$SIZE" "$(echo "$SIZE/1048576" | bc -l)"

if ! command -v collectd >/dev/null && [ ! -x /usr/sbin/collectd ]; then
    echo "== installing collectd-core"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends collectd-core >/dev/null
fi
COLLECTD=$(command -v collectd || echo /usr/sbin/collectd)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/mosquitto.conf" <<CONF
user $(id -un)
listener $PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
log_dest file $WORK/mosquitto.log
CONF
/usr/sbin/mosquitto -c "$WORK/mosquitto.conf" & PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
    sleep 0.1
done

cat > "$WORK/agent.toml" <<CONF
[node]
id = "footprint-s01"
site = "lanzhou-chengguan"
region = "lanzhou"
kind = "siren"
name = "城关区 1号警报器"
[mqtt]
brokers = ["mqtt://127.0.0.1:$PORT"]
heartbeat_interval = "10s"
keep_alive = "30s"
[spool]
dir = "$WORK/spool"
[[checks]]
name = "system"
kind = "system"
interval = "10s"
CONF

cat > "$WORK/collectd.conf" <<CONF
Hostname "footprint-collectd"
FQDNLookup false
Interval 10
BaseDir "$WORK/collectd"
PIDFile "$WORK/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin df
LoadPlugin interface
LoadPlugin mqtt
<Plugin mqtt>
  <Publish "broker">
    Host "127.0.0.1"
    Port $PORT
    ClientId "footprint-collectd"
    QoS 1
    Prefix "collectd"
  </Publish>
</Plugin>
CONF
mkdir -p "$WORK/collectd"

RUST_LOG=warn "$WORK/alarmnet-agent" run --config "$WORK/agent.toml" 2>"$WORK/agent.log" & AGENT=$!
PIDS+=($AGENT)
"$COLLECTD" -f -C "$WORK/collectd.conf" >"$WORK/collectd.log" 2>&1 & COLL=$!
PIDS+=($COLL)
sleep 2
kill -0 "$AGENT" || { echo "agent died:"; cat "$WORK/agent.log"; exit 1; }
kill -0 "$COLL" || { echo "collectd died:"; cat "$WORK/collectd.log"; exit 1; }

# Comparable traffic: count what each published while we sample.
timeout $((DURATION + 5)) mosquitto_sub -p "$PORT" -t '#' -v >"$WORK/traffic.log" 2>/dev/null & PIDS+=($!)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

echo "== sampling for ${DURATION}s every ${SAMPLE}s"
A0=$(ticks "$AGENT"); C0=$(ticks "$COLL"); T0=$(date +%s.%N)
A_RSS_MAX=0; C_RSS_MAX=0; A_RSS_SUM=0; C_RSS_SUM=0; N=0
END=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$END" ]; do
    sleep "$SAMPLE"
    a=$(field "$AGENT" VmRSS); c=$(field "$COLL" VmRSS)
    A_RSS_SUM=$((A_RSS_SUM + a)); C_RSS_SUM=$((C_RSS_SUM + c)); N=$((N + 1))
    [ "$a" -gt "$A_RSS_MAX" ] && A_RSS_MAX=$a
    [ "$c" -gt "$C_RSS_MAX" ] && C_RSS_MAX=$c
done
A1=$(ticks "$AGENT"); C1=$(ticks "$COLL"); T1=$(date +%s.%N)
ELAPSED=$(echo "$T1 - $T0" | bc -l)

report() { # name pid ticks0 ticks1 rss_sum rss_max
    local cpu
    cpu=$(echo "($4 - $3) / $HZ / $ELAPSED * 100" | bc -l)
    printf '%-16s RSS avg %6.0f KiB  max %6d KiB  anon %6s KiB  threads %3s  CPU %.4f %% of a core (%d ticks in %.0f s)\n' \
        "$1" "$(echo "$5 / $N" | bc -l)" "$6" "$(field "$2" RssAnon)" "$(field "$2" Threads)" \
        "$cpu" "$(($4 - $3))" "$ELAPSED"
}
echo "== results (${N} samples)"
report alarmnet-agent "$AGENT" "$A0" "$A1" "$A_RSS_SUM" "$A_RSS_MAX"
report collectd "$COLL" "$C0" "$C1" "$C_RSS_SUM" "$C_RSS_MAX"
printf 'messages seen: agent %d, collectd %d\n' \
    "$(grep -c '^alarmnet/' "$WORK/traffic.log" || true)" \
    "$(grep -c '^collectd/' "$WORK/traffic.log" || true)"
