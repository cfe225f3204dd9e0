# Mosquitto as Debian 12 ships it (2.0.11, the version every figure in
# docs/operations.md was measured with), laid out as on a host installed from the package, so
# deploy/mosquitto/mosquitto.conf runs unchanged: /etc/mosquitto, /var/lib/mosquitto,
# /var/log/mosquitto, /run/mosquitto.
FROM debian:bookworm-slim
# A fixed uid and gid (1883, as in the upstream eclipse-mosquitto image) so that the files
# in ./site/mosquitto can be given to the broker from the host: chgrp 1883, mode 0640.
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --home-dir /var/lib/mosquitto \
        --shell /usr/sbin/nologin mosquitto \
    && apt-get update \
    && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o mosquitto -g mosquitto -m 0750 /run/mosquitto /var/log/mosquitto \
        /var/lib/mosquitto
# Mosquitto starts as root, opens its listeners and files, then runs as `mosquitto`.
# SIGHUP (docker compose kill -s HUP mosquitto) reloads the ACL, passwords and CRL.
EXPOSE 1883 8883
CMD ["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
