#!/usr/bin/env bash
# A second local Apache Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512 over TLS),
# for trying and testing lienthong's transport security (SECURITY.md). It never touches the plaintext
# broker of kafka.sh: its own ports, its own data directory; the same jars.
#
#   deploy/kafka/secure.sh start    make a TLS key pair and CA file (keytool), format storage with the SCRAM
#                                   users (kafka-storage format --add-scram), start, wait; writes client.env
#   deploy/kafka/secure.sh stop     SIGTERM, wait (SIGKILL after a timeout)
#   deploy/kafka/secure.sh status   exit 0 when it answers
#   deploy/kafka/secure.sh env      print the LIENTHONG_* settings of a client (source it: set -a; . <(...))
#   deploy/kafka/secure.sh purge    stop, delete its data directory (keys and passwords included)
#
# Settings (environment, all optional):
#   LIENTHONG_SECURE_KAFKA_PORT   SASL_SSL port on 127.0.0.1 (default 19093); the controller uses PORT+1
#   LIENTHONG_SECURE_KAFKA_DATA   data directory (default <cache>/kafka-data/secure-PORT)
#   LIENTHONG_KAFKA_VERSION, LIENTHONG_CACHE_DIR, LIENTHONG_KAFKA_HEAP (default 512m), JAVA_HOME: as kafka.sh
#
# What it makes, in the data directory (mode 700): broker.p12 (key and certificate, CN=localhost,
# SAN IP:127.0.0.1 and DNS:localhost), ca.pem (that certificate: what clients trust),
# client.env (LIENTHONG_BOOTSTRAP_SERVERS, LIENTHONG_KAFKA_* of the SCRAM user "lienthong", random password).
# The broker's own user "admin" (inter-broker) has another random password, in admin.password.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${LIENTHONG_SECURE_KAFKA_PORT:-19093}"
controller_port="$((port + 1))"
version="${LIENTHONG_KAFKA_VERSION:-4.1.1}"
cache="${LIENTHONG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lienthong}"
libs="$cache/kafka-$version/libs"
data="${LIENTHONG_SECURE_KAFKA_DATA:-$cache/kafka-data/secure-$port}"
heap="${LIENTHONG_KAFKA_HEAP:-512m}"
pidfile="$data/broker.pid"
logfile="$data/broker.log"

die() { echo "secure.sh: $*" >&2; exit 1; }

java_bin() {
  if [ -n "${JAVA_HOME:-}" ]; then echo "$JAVA_HOME/bin/java"; else command -v java || die "java not found: install OpenJDK 17+"; fi
}

keytool_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/keytool" ]; then echo "$JAVA_HOME/bin/keytool"; return; fi
  command -v keytool >/dev/null 2>&1 || die "keytool not found (it comes with the JDK: apt-get install openjdk-17-jdk-headless)"
  command -v keytool
}

random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 24; }

answers() {
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

make_keys() {
  [ -f "$data/broker.p12" ] && [ -f "$data/ca.pem" ] && return 0
  local kt
  kt="$(keytool_bin)"
  random_secret >"$data/keystore.password"
  rm -f "$data/broker.p12" "$data/ca.pem"
  "$kt" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
    -dname "CN=localhost, OU=lienthong test broker" -ext "SAN=IP:127.0.0.1,DNS:localhost" -ext "BC=ca:true" \
    -keystore "$data/broker.p12" -storetype PKCS12 -storepass "$(cat "$data/keystore.password")" >/dev/null 2>&1 \
    || die "keytool could not make the broker's key pair in $data/broker.p12"
  "$kt" -exportcert -rfc -alias broker -keystore "$data/broker.p12" -storetype PKCS12 \
    -storepass "$(cat "$data/keystore.password")" -file "$data/ca.pem" >/dev/null 2>&1 \
    || die "keytool could not export the broker's certificate to $data/ca.pem"
}

write_config() {
  mkdir -p "$data/logs"
  local storepass admin_password
  storepass="$(cat "$data/keystore.password")"
  admin_password="$(cat "$data/admin.password")"
  cat >"$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$data/broker.p12
ssl.keystore.password=$storepass
ssl.truststore.type=PKCS12
ssl.truststore.location=$data/broker.p12
ssl.truststore.password=$storepass
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
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
EOF
  chmod 600 "$data/server.properties"
  cat >"$data/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $logfile
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
EOF
}

write_client_env() {
  cat >"$data/client.env" <<EOF
LIENTHONG_BOOTSTRAP_SERVERS=127.0.0.1:$port
LIENTHONG_KAFKA_SECURITY_PROTOCOL=SASL_SSL
LIENTHONG_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
LIENTHONG_KAFKA_SASL_USERNAME=lienthong
LIENTHONG_KAFKA_SASL_PASSWORD=$(cat "$data/lienthong.password")
LIENTHONG_KAFKA_SSL_CAFILE=$data/ca.pem
EOF
  chmod 600 "$data/client.env"
}

start() {
  "$here/kafka.sh" fetch >/dev/null
  if pid="$(running_pid)"; then
    answers && { echo "secure.sh: SASL_SSL broker already running (pid $pid) on 127.0.0.1:$port"; return 0; }
  fi
  for p in "$port" "$controller_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "127.0.0.1:$p is taken by another process; set LIENTHONG_SECURE_KAFKA_PORT"
    fi
  done
  mkdir -p "$data"
  chmod 700 "$data"
  [ -f "$data/admin.password" ] || random_secret >"$data/admin.password"
  [ -f "$data/lienthong.password" ] || random_secret >"$data/lienthong.password"
  make_keys
  write_config
  write_client_env
  local j
  j="$(java_bin)"
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id
    cluster_id="$("$j" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [ -n "$cluster_id" ] || die "could not generate a cluster id with kafka.tools.StorageTool"
    # The SCRAM users go into the cluster metadata as it is formatted: the broker's own and the client's.
    "$j" -cp "$libs/*" -Dlog4j2.configurationFile="$data/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$data/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$data/admin.password")]" \
      --add-scram "SCRAM-SHA-256=[name=admin,password=$(cat "$data/admin.password")]" \
      --add-scram "SCRAM-SHA-512=[name=lienthong,password=$(cat "$data/lienthong.password")]" \
      --add-scram "SCRAM-SHA-256=[name=lienthong,password=$(cat "$data/lienthong.password")]" \
      >"$data/format.log" 2>&1 || die "formatting KRaft storage failed; see $data/format.log"
  fi
  : >"$logfile"
  nohup "$j" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$data/log4j2.properties" -Dkafka.logs.dir="$data" \
    -cp "$libs/*" kafka.Kafka "$data/server.properties" >"$data/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$logfile" "$data/stdout.log" >&2 || true
      die "broker exited during start-up; logs: $logfile, $data/stdout.log"
    fi
    [ "$waited" -lt 180 ] || die "broker did not answer on 127.0.0.1:$port within 90 s; log: $logfile"
    sleep 0.5
    waited=$((waited + 1))
  done
  echo "secure.sh: SASL_SSL broker (SCRAM-SHA-512) running (pid $(cat "$pidfile")) on 127.0.0.1:$port; client settings: $data/client.env"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "secure.sh: no SASL_SSL broker running for port $port"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "secure.sh: broker stopped"; return 0; }
    sleep 0.5
  done
  echo "secure.sh: broker did not stop within 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if pid="$(running_pid)" && answers; then echo "secure.sh: running (pid $pid) on 127.0.0.1:$port"; else echo "secure.sh: not running on 127.0.0.1:$port"; exit 1; fi ;;
  env) [ -f "$data/client.env" ] || die "no $data/client.env: run '$0 start' first"; cat "$data/client.env" ;;
  purge) stop; rm -rf "$data"; echo "secure.sh: removed $data" ;;
  *) echo "usage: $0 start|stop|status|env|purge" >&2; exit 2 ;;
esac
