#!/usr/bin/env bash
# Footprint of alarmnet-agent beside collectd doing comparable work, in one run.
#
#   agent/footprint.sh [DURATION_SECONDS]     (default 600 = ten minutes)
#   AGENT_BIN=path/to/alarmnet-agent agent/footprint.sh ...   (measure that binary instead)
#
# Builds the agent as it ships (the `agent` cargo profile, static against musl: see
# docs/operations.md), reports its stripped size, starts a private Mosquitto on a free
# loopback port, then runs side by side:
#   - alarmnet-agent with deploy/agent.example.toml as shipped (10 s heartbeat, its default
#     checks: `system` and an `exec` plugin every 30 s), pointed at the private broker and a
#     private spool through ALARMNET_ environment overrides;
#   - collectd (cpu, memory, load, df, interface every 10 s, written out by its mqtt plugin).
# Every 10 s it samples RSS, anonymous memory and threads of both from /proc; CPU is
# user + system time over the whole run (clock ticks of 10 ms). collectd's size counts its
# binary and the plugins loaded, not the shared libraries both use (the agent is static).
# Installs Debian's collectd-core if it is missing. Stops only what it started.
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

if [ -n "${AGENT_BIN:-}" ]; then
    echo "== measuring $AGENT_BIN"
    cp "$AGENT_BIN" "$WORK/alarmnet-agent"
else
    # The shipped build: `agent` profile, static against musl (docs/operations.md). ring's C
    # code is compiled with musl-gcc (Debian musl-tools) if present, else with the host gcc.
    ARCH=$(uname -m)
    TARGET="$ARCH-unknown-linux-musl"
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        echo "== adding the Rust target $TARGET"
        rustup target add "$TARGET"
    fi
    CC_VAR="CC_${TARGET//-/_}"
    CC_MUSL=${!CC_VAR:-$(command -v musl-gcc || echo gcc)}
    echo "== building alarmnet-agent (profile agent, $TARGET, C compiler $CC_MUSL)"
    (cd "$ROOT" && env "$CC_VAR=$CC_MUSL" \
        cargo build --profile agent --target "$TARGET" -p alarmnet-agent --bin alarmnet-agent 2>&1 |
        tail -1)
    cp "$ROOT/target/$TARGET/agent/alarmnet-agent" "$WORK/alarmnet-agent"
fi
strip "$WORK/alarmnet-agent" 2>/dev/null || true

if ! command -v collectd >/dev/null && [ ! -x /usr/sbin/collectd ]; then
    echo "== installing collectd-core"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends collectd-core >/dev/null
fi
COLLECTD=$(command -v collectd || echo /usr/sbin/collectd)
COLLECTD_PLUGINS="cpu memory load df interface mqtt"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/mosquitto.conf" <<CONF
user $(id -un)
listener $PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
log_dest file $WORK/mosquitto.log
CONF
/usr/sbin/mosquitto -c "$WORK/mosquitto.conf" 2>>"$WORK/mosquitto.log" & PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
    sleep 0.1
done

# The example configuration as shipped. Only a missing plugin is replaced, by a stand-in
# with the same output (check_dummy comes with Debian's monitoring-plugins-basic).
cp "$ROOT/deploy/agent.example.toml" "$WORK/agent.toml"
DUMMY=/usr/lib/nagios/plugins/check_dummy
if [ ! -x "$DUMMY" ]; then
    printf '#!/bin/sh\necho "OK: $2"\nexit "$1"\n' > "$WORK/check_dummy"
    chmod +x "$WORK/check_dummy"
    sed -i "s|$DUMMY|$WORK/check_dummy|" "$WORK/agent.toml"
    echo "(no $DUMMY here: a shell stand-in runs instead)"
fi

cat > "$WORK/collectd.conf" <<CONF
Hostname "footprint-collectd"
FQDNLookup false
Interval 10
BaseDir "$WORK/collectd"
PIDFile "$WORK/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
$(for p in $COLLECTD_PLUGINS; do echo "LoadPlugin $p"; done)
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

# Count what each publishes while we sample.
mosquitto_sub -p "$PORT" -t '#' -v >"$WORK/traffic.log" 2>/dev/null & PIDS+=($!)

ALARMNET_MQTT__BROKERS="mqtt://127.0.0.1:$PORT" ALARMNET_SPOOL__DIR="$WORK/spool" RUST_LOG=warn \
    "$WORK/alarmnet-agent" run --config "$WORK/agent.toml" 2>"$WORK/agent.log" & AGENT=$!
PIDS+=($AGENT)
"$COLLECTD" -f -C "$WORK/collectd.conf" >"$WORK/collectd.log" 2>&1 & COLL=$!
PIDS+=($COLL)
sleep 2
kill -0 "$AGENT" || { echo "agent died:"; cat "$WORK/agent.log"; exit 1; }
kill -0 "$COLL" || { echo "collectd died:"; cat "$WORK/collectd.log"; exit 1; }

# utime + stime (own) and cutime + cstime (waited-for children) in clock ticks.
ticks() { awk '{print $14 + $15, $16 + $17}' "/proc/$1/stat"; }
field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

echo "== sampling for ${DURATION}s every ${SAMPLE}s"
read -r A0 AC0 < <(ticks "$AGENT"); read -r C0 CC0 < <(ticks "$COLL"); T0=$(date +%s.%N)
END=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$END" ]; do
    sleep "$SAMPLE"
    for p in "$AGENT" "$COLL"; do
        kill -0 "$p" 2>/dev/null || { echo "process $p died"; exit 1; }
        echo "$(field "$p" VmRSS) $(field "$p" RssAnon) $(field "$p" Threads)" >> "$WORK/samples.$p"
    done
done
read -r A1 AC1 < <(ticks "$AGENT"); read -r C1 CC1 < <(ticks "$COLL"); T1=$(date +%s.%N)
ELAPSED=$(echo "$T1 - $T0" | bc -l)
N=$(wc -l < "$WORK/samples.$AGENT")

# min/median/max of column $2 of samples file $1
stats() { cut -d' ' -f"$2" "$1" | sort -n | awk '{v[NR]=$1} END{printf "%d / %d / %d", v[1], v[int((NR+1)/2)], v[NR]}'; }
pct() { echo "scale=6; ($2 - $1) / $HZ / $ELAPSED * 100" | bc -l | awk '{printf "%.4f", $1}'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.2f MiB", b / 1048576}'; }

AGENT_SIZE=$(stat -c %s "$WORK/alarmnet-agent")
COLL_SIZE=$(stat -L -c %s "$COLLECTD")
for p in $COLLECTD_PLUGINS; do
    COLL_SIZE=$((COLL_SIZE + $(stat -L -c %s "/usr/lib/collectd/$p.so")))
done

echo "== results: ${N} samples over $(printf '%.0f' "$ELAPSED") s"
ROW='%-36s %-24s %-24s\n'
printf "$ROW" "" "alarmnet-agent" "collectd"
printf "$ROW" "size (stripped; collectd + plugins)" "$(mib "$AGENT_SIZE")" "$(mib "$COLL_SIZE")"
printf "$ROW" "RSS KiB min / median / max" "$(stats "$WORK/samples.$AGENT" 1)" "$(stats "$WORK/samples.$COLL" 1)"
printf "$ROW" "anon KiB min / median / max" "$(stats "$WORK/samples.$AGENT" 2)" "$(stats "$WORK/samples.$COLL" 2)"
printf "$ROW" "threads min / median / max" "$(stats "$WORK/samples.$AGENT" 3)" "$(stats "$WORK/samples.$COLL" 3)"
printf "$ROW" "CPU % of a core (own)" "$(pct "$A0" "$A1") ($((A1 - A0)) ticks)" "$(pct "$C0" "$C1") ($((C1 - C0)) ticks)"
printf "$ROW" "CPU % of a core (children)" "$(pct "$AC0" "$AC1")" "$(pct "$CC0" "$CC1")"
printf "$ROW" "messages published" \
    "$(grep -c '^alarmnet/' "$WORK/traffic.log" || true)" \
    "$(grep -c '^collectd/' "$WORK/traffic.log" || true)"
echo "agent smaps_rollup at the end:"
grep -E '^(Rss|Pss|Anonymous|Private_Clean|Shared_Clean):' "/proc/$AGENT/smaps_rollup" | tr -s ' ' | paste -sd' '
if [ -s "$WORK/agent.log" ]; then echo "agent log (warnings):"; tail -5 "$WORK/agent.log"; fi
