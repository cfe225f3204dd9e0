# The collector, built from this repository (context: the repository's root):
#   docker build -f deploy/compose/collector.Dockerfile -t alarmnet/collector .
# collector.Dockerfile.dockerignore keeps target/ and .git out of the context.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p alarmnet-collector --bin alarmnet-collector

FROM debian:bookworm-slim
# tzdata: uptime reports read dates in [uptime] time_zone (Asia/Shanghai by default).
# A fixed uid and gid (990) so that secrets mounted from the host can be given to the
# collector: chgrp 990, mode 0640.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 990 alarmnet-collector \
    && useradd --system --uid 990 --gid 990 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin alarmnet-collector \
    && install -d -o alarmnet-collector -g alarmnet-collector -m 0700 /var/lib/alarmnet-collector
COPY --from=build /src/target/release/alarmnet-collector /usr/bin/alarmnet-collector
USER alarmnet-collector
EXPOSE 8080
ENTRYPOINT ["/usr/bin/alarmnet-collector"]
CMD ["run", "--config", "/etc/alarmnet/collector.toml"]
