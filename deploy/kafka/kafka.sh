#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft: broker + controller in one JVM) on loopback,
# brought from Maven Central's org.apache.kafka artifacts. No Docker, no tarball download.
#
#   deploy/kafka/kafka.sh start     resolve jars (first run only), format storage (first run only), start, wait
#   deploy/kafka/kafka.sh stop      SIGTERM, wait for a clean shutdown (SIGKILL after a timeout)
#   deploy/kafka/kafka.sh status    exit 0 and say so when the broker answers, 1 otherwise
#   deploy/kafka/kafka.sh fetch     only resolve the jars into the cache
#   deploy/kafka/kafka.sh purge     stop, then delete this port's data directory (topics, offsets)
#
# Settings (environment, all optional):
#   LIENTHONG_KAFKA_PORT      client port on 127.0.0.1 (default 9092); the controller uses PORT+1
#   LIENTHONG_KAFKA_VERSION   Apache Kafka version (default 4.1.1)
#   LIENTHONG_CACHE_DIR       where jars and broker data live (default ${XDG_CACHE_HOME:-~/.cache}/lienthong)
#   LIENTHONG_KAFKA_HEAP      JVM heap (default 768m)
#   JAVA_HOME                 the JDK to run (default: java on PATH); Kafka 4.x needs Java 17+
#
# What it shares with secure.sh (jars, Java, storage, start, stop, status) is in broker.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
me="kafka.sh"
what="broker"
port="${LIENTHONG_KAFKA_PORT:-9092}"
# shellcheck source=deploy/kafka/broker.sh
. "$here/broker.sh"
data="$cache/kafka-data/$port"
heap="${LIENTHONG_KAFKA_HEAP:-768m}"

write_config() {
  mkdir -p "$data/logs"
  kraft_properties PLAINTEXT >"$data/server.properties"
  write_log4j
}

start() {
  check_java_version
  fetch
  already_running && return 0
  refuse_taken_ports "set LIENTHONG_KAFKA_PORT or stop it" "$port"
  write_config
  format_storage
  launch 60
  echo "kafka.sh: Apache Kafka $version running (pid $(cat "$data/broker.pid")) on 127.0.0.1:$port; data $data"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch; echo "kafka.sh: jars in $libs" ;;
  purge) stop; rm -rf "$data"; echo "kafka.sh: removed $data" ;;
  *) echo "usage: $0 start|stop|status|fetch|purge" >&2; exit 2 ;;
esac
