#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, from Maven Central), the ClickHouse
# server (Debian clickhouse-server), Prometheus and Alertmanager (Debian packages), all on
# 127.0.0.1 with every byte of state under one git-ignored folder.
#
#   deploy/stack.sh up       install what is missing, start what is not running, wait healthy
#   deploy/stack.sh down     stop everything this folder started
#   deploy/stack.sh status   one line per service, then up/down/partly up (exit 1 only if a
#                            running service is not healthy)
#
#   KAFKA_SECURE=1 deploy/stack.sh up   the same broker with a second listener, SASL_SSL on
#       127.0.0.1:KAFKA_SASL_SSL_PORT (default 9094): TLS with a self-signed CA and a broker
#       certificate for 127.0.0.1 and localhost (openssl), and the SCRAM-SHA-512 and
#       SCRAM-SHA-256 user KAFKA_SASL_USER (default journey) with a random password, created
#       with the broker's own kafka.admin.ConfigCommand. All of it lives in STACK_DIR/kafka/secure,
#       with journey.env: the JOURNEY_* settings of a client of that listener. The PLAINTEXT
#       listener is unchanged. A broker running without the listener is restarted with it.
#
#   CLICKHOUSE_SECURE=1 deploy/stack.sh up   the same ClickHouse server with a TLS native
#       port, 127.0.0.1:CLICKHOUSE_TCP_SECURE_PORT (default 9440; tcp_port_secure, with a
#       self-signed CA and a server certificate for 127.0.0.1 and localhost made by openssl),
#       and the user CLICKHOUSE_SECURE_USER (default journey) with a random password
#       (password_sha256_hex in users.xml). All of it lives in STACK_DIR/clickhouse/secure,
#       with journey.env: the JOURNEY_* settings of a client of that port. The plain port and
#       the passwordless default user are unchanged. A server running without the port is
#       restarted with it.
#
# Environment (all optional): STACK_DIR (default .stack), PYTHON (default .venv/bin/python),
# KAFKA_PORT 9092, KAFKA_CONTROLLER_PORT 9097, CLICKHOUSE_TCP_PORT 9000,
# CLICKHOUSE_HTTP_PORT 8123, CLICKHOUSE_TCP_SECURE_PORT 9440, PROMETHEUS_PORT 9090, ALERTMANAGER_PORT 9093,
# STACK_SERVICES (default "kafka clickhouse prometheus alertmanager"),
# STACK_WAIT_S (seconds to wait for each service to become healthy, default 90),
# PROMETHEUS_CONFIG and ALERTMANAGER_CONFIG (default: the files in deploy/prometheus and
# deploy/alertmanager; tests point them at files with short windows).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
case "$STACK_DIR" in /*) ;; *) STACK_DIR=$ROOT/$STACK_DIR ;; esac
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9097}
KAFKA_SECURE=${KAFKA_SECURE:-0}
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-9094}
KAFKA_SASL_USER=${KAFKA_SASL_USER:-journey}
CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-9000}
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
CLICKHOUSE_SECURE=${CLICKHOUSE_SECURE:-0}
CLICKHOUSE_TCP_SECURE_PORT=${CLICKHOUSE_TCP_SECURE_PORT:-9440}
CLICKHOUSE_SECURE_USER=${CLICKHOUSE_SECURE_USER:-journey}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
STACK_SERVICES=${STACK_SERVICES:-kafka clickhouse prometheus alertmanager}
STACK_WAIT_S=${STACK_WAIT_S:-90}
KAFKA_HEAP=${KAFKA_HEAP:--Xmx768m -Xms256m}
PROMETHEUS_CONFIG=${PROMETHEUS_CONFIG:-$ROOT/deploy/prometheus/prometheus.yml}
ALERTMANAGER_CONFIG=${ALERTMANAGER_CONFIG:-$ROOT/deploy/alertmanager/alertmanager.yml}

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- installs

apt_install() {
    # Debian packages, installed only when their binary is missing.
    local missing=()
    command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server clickhouse-client)
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
    command -v java >/dev/null 2>&1 || die "java is missing: install Java 17 (Debian: apt-get install openjdk-17-jre-headless)"
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq >"$STACK_DIR/apt.log" 2>&1 || die "apt-get update failed, see $STACK_DIR/apt.log"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >>"$STACK_DIR/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed, see $STACK_DIR/apt.log"
}

kafka_fetch() {
    # The broker jars, fetched by Maven from Central into the stack folder (Maven's own
    # ~/.m2 cache makes a second fetch offline).
    local lib=$STACK_DIR/kafka/lib stamp
    stamp=$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -c1-16)
    [ -f "$lib/.fetched-$stamp" ] && return 0
    say "fetching the Kafka broker from Maven Central (deploy/kafka/pom.xml)"
    rm -rf "$lib" && mkdir -p "$lib"
    (cd "$ROOT/deploy/kafka" && mvn -q -B dependency:copy-dependencies \
        -DoutputDirectory="$lib" -DincludeScope=runtime) >"$STACK_DIR/kafka/maven.log" 2>&1 \
        || die "Maven could not fetch the Kafka broker, see $STACK_DIR/kafka/maven.log"
    touch "$lib/.fetched-$stamp"
}

# ---------------------------------------------------------------- TLS material of the secured services

make_certificates() {
    # make_certificates DIR NAME CA_NAME: a CA (DIR/ca.pem, ca.key) and a server key and
    # certificate it signs for 127.0.0.1 and localhost (DIR/NAME.key, NAME.crt). Python's
    # ssl verifies strictly: both certificates carry their X.509 v3 extensions. The
    # certificate is written last, under its final name only once complete.
    local dir=$1 name=$2 ca_name=$3
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.pem \
            -subj "/CN=$ca_name" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=127.0.0.1"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile "$name.ext" -out "$name.crt.tmp" && mv "$name.crt.tmp" "$name.crt"
    ) >"$dir/openssl.log" 2>&1 || die "openssl could not make the certificates, see $dir/openssl.log"
}

make_password() {
    # make_password DIR: a random password in DIR/password (owner only), once.
    [ -s "$1/password" ] || (umask 077 && openssl rand -hex 16 >"$1/password")
}

# ---------------------------------------------------------------- Kafka's SASL_SSL listener

secure() { [ "$KAFKA_SECURE" = 1 ]; }

SECURE_DIR=$STACK_DIR/kafka/secure

kafka_secure_material() {
    # The CA, the broker's key and certificate, and the user's password: made once per stack
    # folder.
    local dir=$SECURE_DIR
    mkdir -p "$dir" && chmod 700 "$dir"
    if [ ! -f "$dir/broker.pem" ]; then
        say "making a CA and a broker certificate for 127.0.0.1 and localhost in $dir"
        make_certificates "$dir" broker "journey-streams local stack CA"
        (cd "$dir" && cat broker.key broker.crt >broker.pem.tmp && mv broker.pem.tmp broker.pem)
    fi
    make_password "$dir"
    # What a client of the listener sets (the tests read it; docs/runbooks.md sources it).
    printf '%s\n' "JOURNEY_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT" \
        "JOURNEY_KAFKA_SECURITY_PROTOCOL=SASL_SSL" "JOURNEY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512" \
        "JOURNEY_KAFKA_SASL_USERNAME=$KAFKA_SASL_USER" "JOURNEY_KAFKA_SASL_PASSWORD_FILE=$dir/password" \
        "JOURNEY_KAFKA_SSL_CAFILE=$dir/ca.pem" >"$dir/journey.env"
}

kafka_scram_user() {
    # SCRAM credentials live in the KRaft metadata; ConfigCommand sets them through the
    # PLAINTEXT listener (idempotent: the same password again only gets a new salt). The
    # password is on its command line for the second this takes (--add-config-file turns
    # SCRAM-SHA-512 into SCRAM_SHA_512 and refuses it): a local test stack's secret.
    # One mechanism per call: the broker refuses two changes of one user in a request.
    local dir=$STACK_DIR/kafka password mechanism
    password=$(cat "$SECURE_DIR/password")
    : >"$SECURE_DIR/scram.log"
    for mechanism in SCRAM-SHA-512 SCRAM-SHA-256; do
        java -Dkafka.logs.dir="$SECURE_DIR" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -cp "$dir/lib/*" \
            kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
            --entity-type users --entity-name "$KAFKA_SASL_USER" \
            --add-config "$mechanism=[password=$password]" >>"$SECURE_DIR/scram.log" 2>&1 \
            || die "creating the $mechanism user failed, see $SECURE_DIR/scram.log"
    done
}

kafka_secure_up() {
    local deadline=$((SECONDS + STACK_WAIT_S)) reason
    kafka_scram_user
    while ((SECONDS < deadline)); do
        if reason=$("$PYTHON" "$ROOT/deploy/healthcheck.py" kafka-sasl-ssl "$SECURE_DIR/journey.env" 2>&1); then
            say "kafka SASL_SSL listener is healthy (127.0.0.1:$KAFKA_SASL_SSL_PORT; client settings in $SECURE_DIR/journey.env)"
            return 0
        fi
        sleep 1
    done
    die "the SASL_SSL listener did not answer within ${STACK_WAIT_S}s ($reason); see $(service_log kafka)"
}

# ---------------------------------------------------------------- ClickHouse's TLS port and user

clickhouse_secure() { [ "$CLICKHOUSE_SECURE" = 1 ]; }

CH_SECURE_DIR=$STACK_DIR/clickhouse/secure

clickhouse_secure_material() {
    # The CA, the server's key and certificate, and the user's password: made once per stack
    # folder, like Kafka's.
    local dir=$CH_SECURE_DIR
    mkdir -p "$dir" && chmod 700 "$dir"
    if [ ! -f "$dir/server.crt" ]; then
        say "making a CA and a ClickHouse server certificate for 127.0.0.1 and localhost in $dir"
        make_certificates "$dir" server "journey-streams local stack ClickHouse CA"
    fi
    make_password "$dir"
    # What a client of the TLS port sets (the tests read it; docs/runbooks.md sources it).
    printf '%s\n' "JOURNEY_CLICKHOUSE_URL=clickhouses://$CLICKHOUSE_SECURE_USER@127.0.0.1:$CLICKHOUSE_TCP_SECURE_PORT/default" \
        "JOURNEY_CLICKHOUSE_PASSWORD_FILE=$dir/password" \
        "JOURNEY_CLICKHOUSE_SSL_CAFILE=$dir/ca.pem" >"$dir/journey.env"
}

clickhouse_secure_config() {
    # config.d/ and users.d/ files next to config.xml and users.xml, merged by the server.
    local conf=$STACK_DIR/clickhouse/conf sha
    mkdir -p "$conf/config.d" "$conf/users.d"
    if ! clickhouse_secure; then
        rm -f "$conf/config.d/secure.xml" "$conf/users.d/secure.xml"
        return 0
    fi
    clickhouse_secure_material
    sha=$(tr -d '\n' <"$CH_SECURE_DIR/password" | sha256sum | cut -d' ' -f1)
    sed -e "s#@TCP_SECURE_PORT@#$CLICKHOUSE_TCP_SECURE_PORT#g" -e "s#@SECURE_DIR@#$CH_SECURE_DIR#g" \
        "$ROOT/deploy/clickhouse/secure.xml" >"$conf/config.d/secure.xml"
    sed -e "s#@USER@#$CLICKHOUSE_SECURE_USER#g" -e "s#@PASSWORD_SHA256@#$sha#g" \
        "$ROOT/deploy/clickhouse/users-secure.xml" >"$conf/users.d/secure.xml"
}

clickhouse_secure_up() {
    local deadline=$((SECONDS + STACK_WAIT_S)) reason
    while ((SECONDS < deadline)); do
        if reason=$("$PYTHON" "$ROOT/deploy/healthcheck.py" clickhouse-secure "$CH_SECURE_DIR/journey.env" 2>&1); then
            say "clickhouse TLS port is healthy (127.0.0.1:$CLICKHOUSE_TCP_SECURE_PORT; client settings in $CH_SECURE_DIR/journey.env)"
            return 0
        fi
        sleep 1
    done
    die "the ClickHouse TLS port did not answer within ${STACK_WAIT_S}s ($reason); see $(service_log clickhouse)"
}

# ---------------------------------------------------------------- process helpers

pidfile() { echo "$STACK_DIR/$1.pid"; }

running() {
    # True when the service's recorded process is alive.
    local pf pid
    pf=$(pidfile "$1")
    [ -f "$pf" ] || return 1
    pid=$(cat "$pf")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_busy() {
    # True when something listens on 127.0.0.1:PORT.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

service_ports() {
    case "$1" in
        kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT$(secure && echo " $KAFKA_SASL_SSL_PORT")" ;;
        clickhouse) echo "$CLICKHOUSE_TCP_PORT $CLICKHOUSE_HTTP_PORT$(clickhouse_secure && echo " $CLICKHOUSE_TCP_SECURE_PORT")" ;;
        prometheus) echo "$PROMETHEUS_PORT" ;;
        alertmanager) echo "$ALERTMANAGER_PORT" ;;
    esac
}

service_log() {
    case "$1" in
        kafka) echo "$STACK_DIR/kafka/log/server.log (and $STACK_DIR/kafka/stdout.log)" ;;
        clickhouse) echo "$STACK_DIR/clickhouse/log/server.err.log (and $STACK_DIR/clickhouse/stdout.log)" ;;
        *) echo "$STACK_DIR/$1/stdout.log" ;;
    esac
}

healthy() {
    case "$1" in
        kafka) "$PYTHON" "$ROOT/deploy/healthcheck.py" kafka "127.0.0.1:$KAFKA_PORT" ;;
        clickhouse) "$PYTHON" "$ROOT/deploy/healthcheck.py" clickhouse "127.0.0.1:$CLICKHOUSE_HTTP_PORT" ;;
        prometheus) "$PYTHON" "$ROOT/deploy/healthcheck.py" http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" ;;
        alertmanager) "$PYTHON" "$ROOT/deploy/healthcheck.py" http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" ;;
    esac
}

launch() {
    # launch NAME LOGFILE CMD...: start CMD in its own session, record its pid.
    local name=$1 log=$2
    shift 2
    setsid nohup "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$name")"
}

wait_healthy() {
    local name=$1 deadline=$((SECONDS + STACK_WAIT_S)) reason
    while ((SECONDS < deadline)); do
        if reason=$(healthy "$name" 2>&1); then
            say "$name is healthy"
            return 0
        fi
        running "$name" || die "$name exited while starting; see $(service_log "$name")"
        sleep 1
    done
    die "$name did not become healthy within ${STACK_WAIT_S}s ($reason); see $(service_log "$name")"
}

# ---------------------------------------------------------------- services

start_kafka() {
    local dir=$STACK_DIR/kafka
    mkdir -p "$dir/data" "$dir/log"
    kafka_fetch
    local sasl_ssl=""
    if secure; then
        kafka_secure_material
        sasl_ssl=",SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT"
    fi
    sed -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
        -e "s#@SASL_SSL_LISTENER@#$sasl_ssl#g" \
        -e "s#@DATA_DIR@#$dir/data#g" "$ROOT/deploy/kafka/server.properties" >"$dir/server.properties"
    if secure; then
        sed -e "s#@SECURE_DIR@#$SECURE_DIR#g" "$ROOT/deploy/kafka/sasl_ssl.properties" >>"$dir/server.properties"
    fi
    local java=(java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true
        -Dkafka.logs.dir="$dir/log" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties"
        -cp "$dir/lib/*")
    if [ ! -f "$dir/data/meta.properties" ]; then
        # KRaft storage is formatted once, on first start, with a fixed cluster id per folder.
        [ -f "$dir/cluster-id" ] || "${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$dir/cluster-id"
        "${java[@]}" kafka.tools.StorageTool format -t "$(cat "$dir/cluster-id")" \
            -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
            || die "formatting Kafka storage failed, see $dir/format.log"
    fi
    launch kafka "$dir/stdout.log" "${java[@]}" kafka.Kafka "$dir/server.properties"
}

start_clickhouse() {
    local dir=$STACK_DIR/clickhouse
    mkdir -p "$dir/data/tmp" "$dir/log" "$dir/conf"
    sed -e "s#@TCP_PORT@#$CLICKHOUSE_TCP_PORT#g" -e "s#@HTTP_PORT@#$CLICKHOUSE_HTTP_PORT#g" \
        -e "s#@DATA_DIR@#$dir/data#g" -e "s#@LOG_DIR@#$dir/log#g" -e "s#@CONF_DIR@#$dir/conf#g" \
        "$ROOT/deploy/clickhouse/config.xml" >"$dir/conf/config.xml"
    cp "$ROOT/deploy/clickhouse/users.xml" "$dir/conf/users.xml"
    clickhouse_secure_config
    local bin
    bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
    launch clickhouse "$dir/stdout.log" "$bin" --config-file="$dir/conf/config.xml"
}

start_prometheus() {
    local dir=$STACK_DIR/prometheus
    mkdir -p "$dir/data"
    launch prometheus "$dir/stdout.log" prometheus \
        --config.file="$PROMETHEUS_CONFIG" \
        --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        --web.enable-lifecycle
}

start_alertmanager() {
    local dir=$STACK_DIR/alertmanager
    mkdir -p "$dir/data"
    # --cluster.listen-address= turns off gossip: one node, nothing listening beyond the API.
    launch alertmanager "$dir/stdout.log" prometheus-alertmanager \
        --config.file="$ALERTMANAGER_CONFIG" \
        --storage.path="$dir/data" \
        --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
        --cluster.listen-address=
}

up_one() {
    local name=$1 port
    if running "$name"; then
        if healthy "$name" >/dev/null 2>&1; then
            say "$name already running (pid $(cat "$(pidfile "$name")"))"
            return 0
        fi
        wait_healthy "$name"
        return 0
    fi
    for port in $(service_ports "$name"); do
        port_busy "$port" && die "$name cannot start: 127.0.0.1:$port is already taken by another process (stop it, or set the port variable; see deploy/stack.sh)"
    done
    "start_$name"
    wait_healthy "$name"
}

stop_one() {
    local name=$1 pf pid i
    pf=$(pidfile "$name")
    if ! running "$name"; then
        rm -f "$pf"
        return 0
    fi
    pid=$(cat "$pf")
    # The service runs in its own session (setsid): signal the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name did not stop within 30 s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pf"
    say "$name stopped"
}

# ---------------------------------------------------------------- commands

cmd_up() {
    mkdir -p "$STACK_DIR/kafka"
    [ -x "$PYTHON" ] || die "$PYTHON is missing: run 'make venv' (or set PYTHON) first"
    apt_install
    local name
    if secure && running kafka && ! grep -q '^listeners=.*SASL_SSL://' "$STACK_DIR/kafka/server.properties"; then
        say "kafka runs without the SASL_SSL listener; restarting it with KAFKA_SECURE=1"
        stop_one kafka
    fi
    if clickhouse_secure && running clickhouse && ! [ -f "$STACK_DIR/clickhouse/conf/config.d/secure.xml" ]; then
        say "clickhouse runs without the TLS port; restarting it with CLICKHOUSE_SECURE=1"
        stop_one clickhouse
    fi
    for name in $STACK_SERVICES; do
        up_one "$name"
        if [ "$name" = kafka ] && secure; then kafka_secure_up; fi
        if [ "$name" = clickhouse ] && clickhouse_secure; then clickhouse_secure_up; fi
    done
    say "up: $STACK_SERVICES (state in $STACK_DIR)"
}

cmd_down() {
    local name
    # Reverse order: consumers of a service stop before it.
    for name in $(echo "$STACK_SERVICES" | tr ' ' '\n' | tac); do stop_one "$name"; done
}

cmd_status() {
    # Reports, exit 0, whether the stack is up, down or partly up; exit 1 only when a
    # service runs but fails its health check (something to look at in its log).
    local name state rc=0 up=0 total=0
    for name in $STACK_SERVICES; do
        total=$((total + 1))
        if running "$name"; then
            up=$((up + 1))
            if healthy "$name" >/dev/null 2>&1; then state="healthy"; else state="running, NOT healthy"; rc=1; fi
            printf '%-13s %-22s pid %-8s ports %s\n' "$name" "$state" "$(cat "$(pidfile "$name")")" "$(service_ports "$name")"
        else
            printf '%-13s %-22s\n' "$name" "down"
        fi
    done
    if [ "$up" -eq 0 ]; then
        say "down (start it with: make up)"
    elif [ "$up" -lt "$total" ]; then
        say "partly up ($up of $total services; make up starts the rest)"
    elif [ "$rc" -eq 0 ]; then
        say "up"
    else
        say "up, but a service is NOT healthy (see its log under $STACK_DIR)"
    fi
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
