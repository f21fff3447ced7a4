#!/usr/bin/env bash
# A second local Apache Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512 over TLS),
# for trying and testing lienthong's transport security (SECURITY.md). It never touches the plaintext
# broker of kafka.sh: its own ports, its own data directory; the same jars, and the same broker.sh.
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
me="secure.sh"
what="SASL_SSL broker"
port="${LIENTHONG_SECURE_KAFKA_PORT:-19093}"
# shellcheck source=deploy/kafka/broker.sh
. "$here/broker.sh"
data="${LIENTHONG_SECURE_KAFKA_DATA:-$cache/kafka-data/secure-$port}"
heap="${LIENTHONG_KAFKA_HEAP:-512m}"

keytool_bin() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/keytool" ]; then echo "$JAVA_HOME/bin/keytool"; return; fi
  command -v keytool >/dev/null 2>&1 || die "keytool not found (it comes with the JDK: apt-get install openjdk-17-jdk-headless)"
  command -v keytool
}

random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 24; }

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
  {
    kraft_properties SASL_SSL
    cat <<EOF
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
EOF
  } >"$data/server.properties"
  chmod 600 "$data/server.properties"
  write_log4j
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
  check_java_version
  fetch >/dev/null
  already_running && return 0
  refuse_taken_ports "set LIENTHONG_SECURE_KAFKA_PORT" "$port" "$controller_port"
  mkdir -p "$data"
  chmod 700 "$data"
  [ -f "$data/admin.password" ] || random_secret >"$data/admin.password"
  [ -f "$data/lienthong.password" ] || random_secret >"$data/lienthong.password"
  make_keys
  write_config
  write_client_env
  # The SCRAM users go into the cluster metadata as it is formatted: the broker's own and the client's.
  format_storage \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$data/admin.password")]" \
    --add-scram "SCRAM-SHA-256=[name=admin,password=$(cat "$data/admin.password")]" \
    --add-scram "SCRAM-SHA-512=[name=lienthong,password=$(cat "$data/lienthong.password")]" \
    --add-scram "SCRAM-SHA-256=[name=lienthong,password=$(cat "$data/lienthong.password")]"
  launch 90
  echo "secure.sh: SASL_SSL broker (SCRAM-SHA-512) running (pid $(cat "$data/broker.pid")) on 127.0.0.1:$port; client settings: $data/client.env"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) [ -f "$data/client.env" ] || die "no $data/client.env: run '$0 start' first"; cat "$data/client.env" ;;
  purge) stop; rm -rf "$data"; echo "secure.sh: removed $data" ;;
  *) echo "usage: $0 start|stop|status|env|purge" >&2; exit 2 ;;
esac
