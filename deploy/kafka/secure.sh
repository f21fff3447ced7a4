#!/usr/bin/env bash
# A second local Apache Kafka broker whose only client listener is SASL_SSL (SCRAM-SHA-512 over TLS),
# for trying and testing lienthong's transport security (SECURITY.md). It never touches the plaintext
# broker of kafka.sh: its own ports, its own data directory; the same jars, and the same broker.sh.
#
#   deploy/kafka/secure.sh start    make a TLS key pair and CA file (keytool), format storage with the SCRAM
#                                   users (kafka-storage format --add-scram), start, wait, apply the ACLs;
#                                   writes client-<user>.env per user
#   deploy/kafka/secure.sh acls     apply the ACLs again (python -m ops.acls apply, as admin): for another
#                                   LIENTHONG_TOPIC_PREFIX or LIENTHONG_APP_ID on the same broker
#   deploy/kafka/secure.sh stop     SIGTERM, wait (SIGKILL after a timeout)
#   deploy/kafka/secure.sh status   exit 0 when it answers
#   deploy/kafka/secure.sh env [USER]  print the LIENTHONG_* settings of USER (default admin; worker, capture,
#                                   connector, dashboard): source it: set -a; . <(...)
#   deploy/kafka/secure.sh purge    stop, delete its data directory (keys and passwords included)
#
# Settings (environment, all optional):
#   LIENTHONG_SECURE_KAFKA_PORT   SASL_SSL port on 127.0.0.1 (default 19093); the controller uses PORT+1
#   LIENTHONG_SECURE_KAFKA_DATA   data directory (default <cache>/kafka-data/secure-PORT)
#   LIENTHONG_TOPIC_PREFIX, LIENTHONG_APP_ID  the deployment the ACLs are made for (as the services read them)
#   LIENTHONG_PYTHON              the Python with the project installed, for the ACLs (default: the repo's
#                                 .venv/bin/python, else python3)
#   LIENTHONG_KAFKA_VERSION, LIENTHONG_CACHE_DIR, LIENTHONG_KAFKA_HEAP (default 512m), JAVA_HOME: as kafka.sh
#
# What it makes, in the data directory (mode 700): broker.p12 (key and certificate, CN=localhost,
# SAN IP:127.0.0.1 and DNS:localhost), ca.pem (that certificate: what clients trust), and per SCRAM user
# (random passwords, <user>.password) client-<user>.env (LIENTHONG_BOOTSTRAP_SERVERS, LIENTHONG_KAFKA_*);
# client.env is admin's. "admin" is the brokers' own user and the only super user (operators' commands);
# worker, capture, connector and dashboard get what ops/acls.py allows them, and nothing else: the broker
# authorizes every request (StandardAuthorizer, allow.everyone.if.no.acl.found=false).
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

users=(admin worker capture connector dashboard)

python_bin() {
  local py="${LIENTHONG_PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x "$here/../../.venv/bin/python" ]; then py="$here/../../.venv/bin/python"; else py="python3"; fi
  fi
  (cd "$here/../.." && "$py" -c "import confluent_kafka, ops.acls") >/dev/null 2>&1 \
    || die "$py cannot import the project (ops.acls, confluent_kafka): run deploy/setup.sh or set LIENTHONG_PYTHON to the project's Python"
  echo "$py"
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
# Every client request is authorized against the ACLs (ops/acls.py); what no ACL allows is refused.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
# Under an authorizer the controller listener authenticates too (as PLAINTEXT its principal would be
# ANONYMOUS, which would have to be a super user): SASL/PLAIN, the broker in this JVM logging in as
# admin (SCRAM cannot serve there: its users live in the metadata the controller serves). This line
# replaces the map of kraft_properties (the last one read counts).
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_password" user_admin="$admin_password";
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
  local user
  for user in "${users[@]}"; do
    cat >"$data/client-$user.env" <<EOF
LIENTHONG_BOOTSTRAP_SERVERS=127.0.0.1:$port
LIENTHONG_KAFKA_SECURITY_PROTOCOL=SASL_SSL
LIENTHONG_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
LIENTHONG_KAFKA_SASL_USERNAME=$user
LIENTHONG_KAFKA_SASL_PASSWORD=$(cat "$data/$user.password")
LIENTHONG_KAFKA_SSL_CAFILE=$data/ca.pem
EOF
    chmod 600 "$data/client-$user.env"
  done
  cp -p "$data/client-admin.env" "$data/client.env"
}

apply_acls() {
  # As admin (the super user); LIENTHONG_TOPIC_PREFIX and LIENTHONG_APP_ID pass through from the caller.
  local py
  py="$(python_bin)"
  [ -f "$data/client-admin.env" ] || die "no $data/client-admin.env: run '$0 start' first"
  (
    set -a
    # shellcheck disable=SC1091
    . "$data/client-admin.env"
    set +a
    cd "$here/../.." && "$py" -m ops.acls apply
  ) || die "the ACLs were not applied (above); the broker refuses every service until they are: fix it, then '$0 acls'"
}

start() {
  check_java_version
  fetch >/dev/null
  already_running && return 0
  refuse_taken_ports "set LIENTHONG_SECURE_KAFKA_PORT" "$port" "$controller_port"
  mkdir -p "$data"
  chmod 700 "$data"
  python_bin >/dev/null  # before anything is made: without the ACLs the broker would refuse every service
  # SCRAM users are made only when the storage is formatted: a directory of an older secure.sh (one
  # user "lienthong", no ACLs) would start without the services' users.
  if [ -f "$data/logs/meta.properties" ] && [ "$(cat "$data/users" 2>/dev/null)" != "${users[*]}" ]; then
    die "$data was made by an older secure.sh, without the users ${users[*]}: run '$0 purge', then '$0 start'"
  fi
  local user scram=()
  for user in "${users[@]}"; do
    [ -f "$data/$user.password" ] || random_secret >"$data/$user.password"
    scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "$data/$user.password")]")
    scram+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$(cat "$data/$user.password")]")
  done
  make_keys
  write_config
  write_client_env
  # The SCRAM users go into the cluster metadata as it is formatted: the broker's own and the services'.
  format_storage "${scram[@]}"
  echo "${users[*]}" >"$data/users"
  launch 90
  apply_acls
  echo "secure.sh: SASL_SSL broker (SCRAM-SHA-512, ACLs) running (pid $(cat "$data/broker.pid")) on 127.0.0.1:$port; client settings: $data/client-<user>.env (${users[*]})"
}

case "${1:-}" in
  start) start ;;
  acls) apply_acls ;;
  stop) stop ;;
  status) status ;;
  env)
    user="${2:-admin}"
    [ -f "$data/client-$user.env" ] || die "no $data/client-$user.env: run '$0 start' first (users: ${users[*]})"
    cat "$data/client-$user.env"
    ;;
  purge) stop; rm -rf "$data"; echo "secure.sh: removed $data" ;;
  *) echo "usage: $0 start|acls|stop|status|env [USER]|purge" >&2; exit 2 ;;
esac
