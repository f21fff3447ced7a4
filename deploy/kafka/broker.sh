# shellcheck shell=bash
# What kafka.sh (the plaintext broker) and secure.sh (the SASL_SSL one) share: a single-node Apache
# Kafka broker (KRaft: broker + controller in one JVM) on loopback, from Maven Central's jars.
# Sourced by them, not run. Before sourcing, the script sets:
#   here   its directory (pom.xml is there)
#   me     its name, for messages
#   what   the broker as messages name it ("broker", "SASL_SSL broker")
#   port   the client port; the controller uses port+1
# and after sourcing: data (the broker's directory) and heap. Settings read here (all optional):
#   LIENTHONG_KAFKA_VERSION   Apache Kafka version (default 4.1.1)
#   LIENTHONG_CACHE_DIR       where jars and broker data live (default ${XDG_CACHE_HOME:-~/.cache}/lienthong)
#   JAVA_HOME                 the JDK to run (default: java on PATH); Kafka 4.x needs Java 17+

controller_port="$((port + 1))"
version="${LIENTHONG_KAFKA_VERSION:-4.1.1}"
cache="${LIENTHONG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lienthong}"
libs="$cache/kafka-$version/libs"

die() { echo "$me: $*" >&2; exit 1; }

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
  echo "$me: resolving Apache Kafka $version jars from Maven Central into $libs (first run only)"
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
  [ -f "$data/broker.log" ] && grep -q "Kafka Server started" "$data/broker.log"
}

running_pid() {
  [ -f "$data/broker.pid" ] || return 1
  local pid
  pid="$(cat "$data/broker.pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

already_running() {
  # True (and says so) when this port's broker runs and answers: start has nothing to do.
  local pid
  pid="$(running_pid)" && answers && { echo "$me: $what already running (pid $pid) on 127.0.0.1:$port"; return 0; }
  return 1
}

refuse_taken_ports() {
  # refuse_taken_ports HINT PORT...: die when another process listens on one of the ports.
  local hint="$1" p
  shift
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "127.0.0.1:$p is taken by another process; $hint"
    fi
  done
}

kraft_properties() {
  # kraft_properties LISTENER: the server.properties every broker here has, its one client listener
  # named LISTENER (PLAINTEXT, SASL_SSL); the script adds what that listener needs.
  local listener="$1"
  cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listener://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=$listener
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$listener:$listener
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
}

write_log4j() {
  cat >"$data/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $data/broker.log
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

format_storage() {
  # format_storage [ARGS...]: format the KRaft storage once (the first start), with kafka-storage
  # format's extra ARGS (secure.sh: its SCRAM users).
  [ -f "$data/logs/meta.properties" ] && return 0
  local j cluster_id
  j="$(java_bin)"
  cluster_id="$("$j" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [ -n "$cluster_id" ] || die "could not generate a cluster id with kafka.tools.StorageTool"
  "$j" -cp "$libs/*" -Dlog4j2.configurationFile="$data/log4j2.properties" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$data/server.properties" "$@" \
    >"$data/format.log" 2>&1 || die "formatting KRaft storage failed; see $data/format.log"
}

launch() {
  # launch SECONDS: start the broker in the background and wait until it answers, SECONDS at most.
  local j logfile="$data/broker.log" waited=0
  j="$(java_bin)"
  : >"$logfile"
  nohup "$j" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$data/log4j2.properties" -Dkafka.logs.dir="$data" \
    -cp "$libs/*" kafka.Kafka "$data/server.properties" >"$data/stdout.log" 2>&1 &
  echo $! >"$data/broker.pid"
  until answers; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$logfile" "$data/stdout.log" >&2 || true
      die "broker exited during start-up; logs: $logfile, $data/stdout.log"
    fi
    [ "$waited" -lt "$(($1 * 2))" ] || die "broker did not answer on 127.0.0.1:$port within $1 s; log: $logfile"
    sleep 0.5
    waited=$((waited + 1))
  done
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "$me: no $what running for port $port"
    rm -f "$data/broker.pid"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$data/broker.pid"; echo "$me: broker stopped"; return 0; }
    sleep 0.5
  done
  echo "$me: broker did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$data/broker.pid"
}

status() {
  local pid
  if pid="$(running_pid)" && answers; then
    echo "$me: running (pid $pid) on 127.0.0.1:$port, Apache Kafka $version, data $data"
  else
    echo "$me: not running on 127.0.0.1:$port"
    return 1
  fi
}
