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
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${LIENTHONG_KAFKA_PORT:-9092}"
controller_port="$((port + 1))"
version="${LIENTHONG_KAFKA_VERSION:-4.1.1}"
cache="${LIENTHONG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lienthong}"
libs="$cache/kafka-$version/libs"
data="$cache/kafka-data/$port"
heap="${LIENTHONG_KAFKA_HEAP:-768m}"
pidfile="$data/broker.pid"
logfile="$data/broker.log"

die() { echo "kafka.sh: $*" >&2; exit 1; }

java_bin() {
  if [ -n "${JAVA_HOME:-}" ]; then
    [ -x "$JAVA_HOME/bin/java" ] || die "JAVA_HOME=$JAVA_HOME has no bin/java; install OpenJDK 17+ (apt-get install openjdk-17-jre-headless) or unset JAVA_HOME"
    echo "$JAVA_HOME/bin/java"
  else
    command -v java >/dev/null 2>&1 || die "java not found on PATH: install OpenJDK 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    command -v java
  fi
}

check_java_version() {
  local j major
  j="$(java_bin)"
  major="$("$j" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')"
  [ -n "$major" ] || die "could not read the Java version of $j"
  [ "${major%%.*}" -ge 17 ] || die "$j is Java $major; Apache Kafka $version needs Java 17 or newer (set JAVA_HOME)"
}

fetch() {
  if [ -f "$libs/.complete" ]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH: install Maven (apt-get install maven); it resolves the Kafka $version jars from Maven Central once, into $libs"
  echo "kafka.sh: resolving Apache Kafka $version jars from Maven Central into $libs (first run only)"
  rm -rf "$libs"
  mkdir -p "$libs"
  if ! mvn -B -q -Dstyle.color=never -f "$here/pom.xml" -Dkafka.version="$version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >"$libs.mvn.log" 2>&1; then
    tail -n 30 "$libs.mvn.log" >&2
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$version (is Maven Central reachable?); log: $libs.mvn.log"
  fi
  ls "$libs"/kafka_2.13-"$version".jar >/dev/null 2>&1 || die "kafka_2.13-$version.jar missing from $libs after mvn"
  touch "$libs/.complete"
}

answers() {
  # The client port accepts connections and the broker logged that it finished starting.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 1
  [ -f "$logfile" ] && grep -q "Kafka Server started" "$logfile"
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  mkdir -p "$data/logs"
  cat >"$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumers in tests join and leave often; do not wait for more members.
group.initial.rebalance.delay.ms=0
# Every topic is declared by the project (lienthong topics create, faust's internal topics):
# a misspelt topic name fails loudly instead of silently creating a new topic.
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=168
EOF
  cat >"$data/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $logfile
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
EOF
}

classpath() { echo "$libs/*"; }

start() {
  check_java_version
  fetch
  if pid="$(running_pid)"; then
    answers && { echo "kafka.sh: broker already running (pid $pid) on 127.0.0.1:$port"; return 0; }
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is taken by another process; set LIENTHONG_KAFKA_PORT or stop it"
  fi
  write_config
  local j
  j="$(java_bin)"
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id
    cluster_id="$("$j" -cp "$(classpath)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [ -n "$cluster_id" ] || die "could not generate a cluster id with kafka.tools.StorageTool"
    "$j" -cp "$(classpath)" -Dlog4j2.configurationFile="$data/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$data/server.properties" >"$data/format.log" 2>&1 \
      || die "formatting KRaft storage failed; see $data/format.log"
  fi
  : >"$logfile"
  nohup "$j" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$data/log4j2.properties" -Dkafka.logs.dir="$data" \
    -cp "$(classpath)" kafka.Kafka "$data/server.properties" >"$data/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$logfile" "$data/stdout.log" >&2 || true
      die "broker exited during start-up; logs: $logfile, $data/stdout.log"
    fi
    [ "$waited" -lt 120 ] || die "broker did not answer on 127.0.0.1:$port within 60 s; log: $logfile"
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "kafka.sh: Apache Kafka $version running (pid $(cat "$pidfile")) on 127.0.0.1:$port; data $data"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "kafka.sh: no broker running for port $port"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka.sh: broker stopped"; return 0; }
    sleep 0.5
  done
  echo "kafka.sh: broker did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  if pid="$(running_pid)" && answers; then
    echo "kafka.sh: running (pid $pid) on 127.0.0.1:$port, Apache Kafka $version, data $data"
  else
    echo "kafka.sh: not running on 127.0.0.1:$port"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch; echo "kafka.sh: jars in $libs" ;;
  purge) stop; rm -rf "$data"; echo "kafka.sh: removed $data" ;;
  *) echo "usage: $0 start|stop|status|fetch|purge" >&2; exit 2 ;;
esac
