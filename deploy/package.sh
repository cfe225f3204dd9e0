#!/usr/bin/env bash
# Builds the Debian packages alarmnet-agent and alarmnet-collector from binaries that are
# already built, with dpkg-deb; only --build-agent compiles (the static agent).
#
#   deploy/package.sh [--agent-bin PATH | --build-agent TARGET] [--collector-bin PATH]
#                     [--out DIR] [--arch ARCH] [--version VERSION] [--fast]
#
# Real packages (docs/operations.md, "Installing from the Debian packages"):
#   CC_x86_64_unknown_linux_musl=musl-gcc cargo build --profile agent \
#       --target x86_64-unknown-linux-musl -p alarmnet-agent --bin alarmnet-agent
#   cargo build --release -p alarmnet-collector --bin alarmnet-collector
#   deploy/package.sh --agent-bin target/x86_64-unknown-linux-musl/agent/alarmnet-agent \
#       --collector-bin target/release/alarmnet-collector --out target/debian
# Either package alone: give only its binary. For another architecture pass --arch (arm64,
# armhf) with that architecture's binaries, or let --build-agent do it for the agent:
#   deploy/package.sh --build-agent aarch64-unknown-linux-musl --out target/debian
# builds the agent (`agent` profile, static musl) for TARGET with the matching C cross
# compiler as CC and linker (aarch64-linux-gnu-gcc, arm-linux-gnueabihf-gcc: Debian's
# gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf; the Rust target from `rustup target add`)
# and packages it for TARGET's architecture.
# --fast (the test suite) compresses with gzip -1 instead of xz: the debug binaries the tests
# package are large, and only the package's shape is under test there.
#
# Each package holds the binary (/usr/bin, stripped when the host's strip understands it),
# its systemd unit (/lib/systemd/system), and the example config as a conffile
# (/etc/alarmnet/NAME.toml, mode 0640). The maintainer scripts create the system user and
# group of the service, hand the config to that group, and reload systemd; they neither
# enable nor start the service (the config must be edited first). The state directory
# (/var/lib/NAME) is the unit's StateDirectory=: systemd creates it with the right owner.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,7p' "$0" >&2
    exit 64
}

agent_bin= agent_target= collector_bin= out=target/debian arch= version= fast=0
while (($#)); do
    case $1 in
        --agent-bin) agent_bin=${2:?}; shift 2 ;;
        --build-agent) agent_target=${2:?}; shift 2 ;;
        --collector-bin) collector_bin=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --arch) arch=${2:?}; shift 2 ;;
        --version) version=${2:?}; shift 2 ;;
        --fast) fast=1; shift ;;
        -h | --help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
[[ -n $agent_bin || -n $agent_target || -n $collector_bin ]] || usage
[[ -z $agent_bin || -z $agent_target ]] || { echo "--agent-bin or --build-agent, not both" >&2; exit 64; }

if [[ -n $agent_target ]]; then
    case $agent_target in
        x86_64-unknown-linux-musl) target_arch=amd64 cc=$(command -v musl-gcc || echo gcc) ;;
        aarch64-unknown-linux-musl) target_arch=arm64 cc=aarch64-linux-gnu-gcc ;;
        armv7-unknown-linux-musleabihf) target_arch=armhf cc=arm-linux-gnueabihf-gcc ;;
        *) echo "--build-agent: unsupported target $agent_target" >&2; exit 64 ;;
    esac
    # One --arch for both packages: a collector built here goes with an agent for here.
    if [[ -n $collector_bin && $target_arch != "${arch:-$(dpkg --print-architecture)}" ]]; then
        echo "--build-agent $agent_target makes a $target_arch package: package the collector in a run of its own" >&2
        exit 64
    fi
    arch=$target_arch
    command -v "$cc" >/dev/null || { echo "--build-agent: $cc not found (install it)" >&2; exit 1; }
    var=${agent_target//-/_}
    env "CC_$var=$cc" "CARGO_TARGET_${var^^}_LINKER=$cc" \
        cargo build --profile agent --target "$agent_target" -p alarmnet-agent --bin alarmnet-agent >&2
    agent_bin=target/$agent_target/agent/alarmnet-agent
fi
for bin in $agent_bin $collector_bin; do
    [[ -x $bin ]] || { echo "not an executable: $bin (build it first)" >&2; exit 1; }
done

# The workspace version ([workspace.package] version in Cargo.toml).
if [[ -z $version ]]; then
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
fi
[[ -n $version ]] || { echo "cannot read the workspace version from Cargo.toml" >&2; exit 1; }
arch=${arch:-$(dpkg --print-architecture)}
if ((fast)); then compress=(-Zgzip -z1); else compress=(-Zxz); fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package NAME BINARY DESCRIPTION
package() {
    local name=$1 bin=$2 description=$3
    local root=$work/$name user=$name
    install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
        "$root/etc/alarmnet" "$root/usr/share/doc/$name"
    install -m 0755 "$bin" "$root/usr/bin/$name"
    # A binary the host's strip does not understand (another architecture) stays as built;
    # the shipped agent profile strips its symbols already.
    strip --strip-unneeded "$root/usr/bin/$name" 2>/dev/null || true
    install -m 0644 "deploy/systemd/$name.service" "$root/lib/systemd/system/"
    local config=${name#alarmnet-}
    install -m 0640 "deploy/$config.example.toml" "$root/etc/alarmnet/$config.toml"
    install -m 0644 docs/operations.md docs/operations.zh.md "$root/usr/share/doc/$name/"

    # A static binary (the musl agent) needs no C library.
    local depends=adduser
    if readelf -d "$root/usr/bin/$name" 2>/dev/null | grep -q NEEDED; then
        depends="libc6, adduser"
    fi
    local size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: alarmnet operations <ops@example.invalid>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $size
Homepage: https://example.invalid/alarmnet
Description: $description
 Part of alarmnet, the monitoring of a province's civil air-defence sirens and
 alarm display screens over MQTT. See /usr/share/doc/$name/operations.md.
EOF
    echo "/etc/alarmnet/$config.toml" >"$root/DEBIAN/conffiles"

    # Files are named under $DPKG_ROOT, empty on a normal installation and the target root
    # when dpkg installs into another root without chroot (--force-script-chrootless, as
    # tests/tests/packages.rs does).
    cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    if ! getent passwd $user >/dev/null; then
        adduser --system --group --no-create-home --home /nonexistent $user >/dev/null
    fi
    # The config may hold secrets: readable by the service's group only, unless the
    # administrator recorded other rights with dpkg-statoverride.
    if ! dpkg-statoverride --list /etc/alarmnet/$config.toml >/dev/null 2>&1; then
        chown root:$user "\$DPKG_ROOT/etc/alarmnet/$config.toml"
        chmod 0640 "\$DPKG_ROOT/etc/alarmnet/$config.toml"
    fi
    if [ -d "\$DPKG_ROOT/run/systemd/system" ]; then
        systemctl daemon-reload || true
    fi
fi
exit 0
EOF
    cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] && [ -d "\$DPKG_ROOT/run/systemd/system" ]; then
    systemctl stop $name.service || true
fi
exit 0
EOF
    cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ -d "\$DPKG_ROOT/run/systemd/system" ]; then
    systemctl daemon-reload || true
fi
if [ "\$1" = purge ]; then
    # The state directory (spool or store) goes with a purge, never with a removal.
    rm -rf "\$DPKG_ROOT/var/lib/private/$name" "\$DPKG_ROOT/var/lib/$name"
fi
exit 0
EOF
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

    # Checksums of the payload but the conffile (dpkg keeps that one's itself), for
    # `dpkg --verify` and debsums.
    (cd "$root" && find . -path ./DEBIAN -prune -o -path "./etc/alarmnet/$config.toml" \
        -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
        >"$root/DEBIAN/md5sums"

    local deb=$out/${name}_${version}_${arch}.deb
    dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
    echo "$deb"
}

if [[ -n $agent_bin ]]; then
    package alarmnet-agent "$agent_bin" \
        "alarmnet agent: reports a siren or display node's health over MQTT"
fi
if [[ -n $collector_bin ]]; then
    package alarmnet-collector "$collector_bin" \
        "alarmnet collector: node liveness, alerts, history and uptime"
fi
