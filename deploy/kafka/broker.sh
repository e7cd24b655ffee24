#!/usr/bin/env bash
# Local single-node Apache Kafka 3.9 broker (KRaft) for streamrec development and tests, run from
# Maven Central jars with plain `java` (no Docker, no Kafka tarball).
#
# Usage: deploy/kafka/broker.sh {fetch|start|wait|status|stop|logs [-f|N]|consume BOOTSTRAP TOPIC [MAX]}
#   fetch   copy the runtime jars of deploy/kafka/pom.xml into deploy/kafka/lib (cached behind
#           deploy/kafka/.stamp-lib, which records a hash of pom.xml and the jar list)
#   start   fetch if needed, format a FRESH run dir, start the broker in the background and wait
#           until it answers a Kafka metadata request; prints the bootstrap address on stdout
#   wait    only the readiness wait (for a broker started earlier); prints the bootstrap address
#   status  prints "running <pid> 127.0.0.1:<port>" (exit 0) or "stopped" (exit 3)
#   stop    SIGTERM, up to 30 s, then SIGKILL; idempotent
#   logs    tail of the broker log (default 100 lines; -f follows)
#   consume read TOPIC of any broker from the beginning with Kafka's own console consumer (Java,
#           independent of the Python clients): one "key<TAB>value" line per record, a null value
#           printed as "null"; stops after MAX records, or after STREAMREC_CONSUME_IDLE_MS
#           (default 10000) without one
#
# Environment:
#   STREAMREC_BROKER_DIR              run dir (default <repo>/var/kafka); wiped by `start`
#   STREAMREC_BROKER_PORT             broker port (default 19092)
#   STREAMREC_BROKER_CONTROLLER_PORT  KRaft controller port (default 19093)
#   STREAMREC_BROKER_HEAP             JVM heap (default 512m)
#   STREAMREC_BROKER_WAIT_S           readiness timeout in seconds (default 90)
#   STREAMREC_BROKER_JAVA             java executable (default: java on PATH; Kafka 3.9 supports 8-21)
#   STREAMREC_BROKER_JVM_OPTS         extra JVM options (whitespace-separated)
#
# Optional TLS listener (off unless STREAMREC_BROKER_SSL_PORT is set): a second listener named SSL
# on 127.0.0.1:<port>, server authentication only (no client certificates; the PLAINTEXT and
# controller listeners stay as they are, and readiness is still probed over PLAINTEXT). Clients
# then use security_protocol=SSL with the CA that signed the broker's certificate; the certificate
# must name 127.0.0.1 (subjectAltName IP:127.0.0.1) for clients that verify the host.
#   STREAMREC_BROKER_SSL_PORT               TLS port (written to <run dir>/bootstrap.ssl)
#   STREAMREC_BROKER_SSL_KEYSTORE           the broker's key + certificate chain (required with it)
#   STREAMREC_BROKER_SSL_KEYSTORE_PASSWORD  its password, also used as the key's (required with it)
#   STREAMREC_BROKER_SSL_KEYSTORE_TYPE      PKCS12 (default) or JKS
#
# Optional SASL/SCRAM listener (off unless STREAMREC_BROKER_SASL_PORT is set): SASL_PLAINTEXT on
# 127.0.0.1:<port>, mechanism SCRAM-SHA-256, with users formatted into the KRaft storage (clients
# use security_protocol=SASL_PLAINTEXT, sasl_mechanism=SCRAM-SHA-256).
#   STREAMREC_BROKER_SASL_PORT   SASL port (written to <run dir>/bootstrap.sasl)
#   STREAMREC_BROKER_SASL_USERS  name:password[,name:password] (letters, digits, _ and -)
#
# Progress goes to stderr; stdout carries only results (bootstrap address / status line).
set -euo pipefail

KAFKA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_DIR/../.." && pwd)"
POM="$KAFKA_DIR/pom.xml"
LIB="$KAFKA_DIR/lib"
STAMP="$KAFKA_DIR/.stamp-lib"
TEMPLATE="$KAFKA_DIR/server.properties.in"
LOG4J="$KAFKA_DIR/log4j.properties"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

RUN_DIR="${STREAMREC_BROKER_DIR:-$REPO_ROOT/var/kafka}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
PORT="${STREAMREC_BROKER_PORT:-19092}"
CONTROLLER_PORT="${STREAMREC_BROKER_CONTROLLER_PORT:-19093}"
HEAP="${STREAMREC_BROKER_HEAP:-512m}"
WAIT_S="${STREAMREC_BROKER_WAIT_S:-90}"
JAVA="${STREAMREC_BROKER_JAVA:-java}"
STOP_WAIT_S=30
SSL_PORT="${STREAMREC_BROKER_SSL_PORT:-}"
SSL_KEYSTORE="${STREAMREC_BROKER_SSL_KEYSTORE:-}"
SSL_KEYSTORE_PASSWORD="${STREAMREC_BROKER_SSL_KEYSTORE_PASSWORD:-}"
SSL_KEYSTORE_TYPE="${STREAMREC_BROKER_SSL_KEYSTORE_TYPE:-PKCS12}"
SASL_PORT="${STREAMREC_BROKER_SASL_PORT:-}"
SASL_USERS="${STREAMREC_BROKER_SASL_USERS:-}"

PID_FILE="$RUN_DIR/kafka.pid"
BOOTSTRAP_FILE="$RUN_DIR/bootstrap"
SSL_BOOTSTRAP_FILE="$RUN_DIR/bootstrap.ssl"
SASL_BOOTSTRAP_FILE="$RUN_DIR/bootstrap.sasl"
CLUSTER_ID_FILE="$RUN_DIR/cluster.id"
MARKER="$RUN_DIR/.streamrec-kafka-run"
LOG_FILE="$RUN_DIR/logs/kafka.out"

TMP_FETCH=""
cleanup() {
    if [[ -n "$TMP_FETCH" ]]; then rm -rf -- "$TMP_FETCH"; fi
}
trap cleanup EXIT

say() { printf 'broker.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# --- helpers -----------------------------------------------------------------------------------

pick_python() {
    local py
    for py in "$REPO_ROOT/.venv/bin/python" python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c "import streamrec" 2>/dev/null; then
            command -v "$py"
            return
        fi
    done
    die "no Python environment with streamrec installed (run 'make setup' first): the readiness probe is streamrec.kafka.broker"
}

check_port() { # name value
    local name=$1 value=$2
    if [[ ! "$value" =~ ^[1-9][0-9]{0,4}$ ]] || ((value < 1 || value > 65535)); then
        die "$name='$value' is not a TCP port"
    fi
    ((value != 9092 && value != 9093)) ||
        die "$name=$value: 9092/9093 are reserved for a 'real' Kafka; pick another port"
}

check_ports() {
    check_port STREAMREC_BROKER_PORT "$PORT"
    check_port STREAMREC_BROKER_CONTROLLER_PORT "$CONTROLLER_PORT"
    [[ "$PORT" != "$CONTROLLER_PORT" ]] || die "broker and controller port are both $PORT"
    if [[ -n "$SSL_PORT" ]]; then
        check_port STREAMREC_BROKER_SSL_PORT "$SSL_PORT"
        [[ "$SSL_PORT" != "$PORT" && "$SSL_PORT" != "$CONTROLLER_PORT" ]] ||
            die "STREAMREC_BROKER_SSL_PORT=$SSL_PORT is already the broker or controller port"
    fi
    if [[ -n "$SASL_PORT" ]]; then
        check_port STREAMREC_BROKER_SASL_PORT "$SASL_PORT"
        [[ "$SASL_PORT" != "$PORT" && "$SASL_PORT" != "$CONTROLLER_PORT" && "$SASL_PORT" != "$SSL_PORT" ]] ||
            die "STREAMREC_BROKER_SASL_PORT=$SASL_PORT is already another listener's port"
        [[ "$SASL_USERS" =~ ^[A-Za-z0-9_-]+:[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+:[A-Za-z0-9_-]+)*$ ]] ||
            die "STREAMREC_BROKER_SASL_PORT is set: STREAMREC_BROKER_SASL_USERS must be name:password[,name:password] (letters, digits, _ and -)"
    fi
}

# --add-scram arguments of the storage format: SCRAM credentials live in the KRaft metadata log.
scram_args() {
    local pair
    local -a pairs
    [[ -n "$SASL_PORT" ]] || return 0
    IFS=',' read -r -a pairs <<<"$SASL_USERS"
    for pair in "${pairs[@]}"; do
        printf '%s\n' "--add-scram" "SCRAM-SHA-256=[name=${pair%%:*},password=${pair#*:}]"
    done
}

# The TLS settings are usable: a readable keystore, a password, a known type. The values go into
# a Java properties file, where a backslash is an escape and a line break ends the value.
check_ssl() {
    [[ -n "$SSL_PORT" ]] || return 0
    [[ -n "$SSL_KEYSTORE" && -f "$SSL_KEYSTORE" && -r "$SSL_KEYSTORE" ]] ||
        die "STREAMREC_BROKER_SSL_PORT is set but STREAMREC_BROKER_SSL_KEYSTORE ('$SSL_KEYSTORE') is not a readable file"
    [[ "$SSL_KEYSTORE" == /* ]] || SSL_KEYSTORE="$PWD/$SSL_KEYSTORE"
    [[ -n "$SSL_KEYSTORE_PASSWORD" ]] ||
        die "STREAMREC_BROKER_SSL_PORT is set but STREAMREC_BROKER_SSL_KEYSTORE_PASSWORD is empty"
    [[ "$SSL_KEYSTORE_TYPE" == PKCS12 || "$SSL_KEYSTORE_TYPE" == JKS ]] ||
        die "STREAMREC_BROKER_SSL_KEYSTORE_TYPE='$SSL_KEYSTORE_TYPE': PKCS12 or JKS"
    local v
    for v in "$SSL_KEYSTORE" "$SSL_KEYSTORE_PASSWORD"; do
        [[ "$v" != *\\* && "$v" != *$'\n'* && "$v" != *$'\r'* ]] ||
            die "the keystore path and password must not contain a backslash or a line break"
    done
}

# True when 127.0.0.1:<port> can be bound (SO_REUSEADDR: TIME_WAIT leftovers do not count).
port_free() {
    "$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
' "$1"
}

# Alive and not a zombie (a reparented child whose reaper has not run yet still answers kill -0).
pid_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/stat" ]]; then
        state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
        [[ "$state" != Z && "$state" != X ]] || return 1
    fi
    return 0
}

read_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(<"$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# The PID is alive AND is the java kafka.Kafka process of THIS run dir (guards against PID reuse).
is_our_broker() {
    local pid=$1 args
    pid_alive "$pid" || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        args="$(ps -ww -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$args" == *kafka.Kafka* && "$args" == *"$RUN_DIR/server.properties"* ]]
}

running_pid() {
    local pid
    pid="$(read_pid)" || return 1
    is_our_broker "$pid" || return 1
    printf '%s\n' "$pid"
}

log_tail() {
    local n=${1:-60}
    if [[ -f "$LOG_FILE" ]]; then
        say "last $n lines of $LOG_FILE:"
        tail -n "$n" "$LOG_FILE" >&2
    else
        say "no broker log at $LOG_FILE"
    fi
}

# --- fetch -------------------------------------------------------------------------------------

stamp_key() {
    printf 'pom-sha256=%s plugin=%s\n' "$(sha256sum "$POM" | cut -d' ' -f1)" "$DEP_PLUGIN"
}

lib_ok() {
    local jar n=0 have
    [[ -f "$STAMP" && -d "$LIB" ]] || return 1
    [[ "$(head -n 1 "$STAMP")" == "$(stamp_key)" ]] || return 1
    while IFS= read -r jar; do
        [[ -s "$LIB/$jar" ]] || return 1
        n=$((n + 1))
    done < <(tail -n +2 "$STAMP")
    have="$(find "$LIB" -maxdepth 1 -name '*.jar' | wc -l)"
    ((n > 0 && n == have))
}

cmd_fetch() {
    local force=${1:-}
    if [[ "$force" != force ]] && lib_ok; then
        say "jars up to date in $LIB ($(tail -n +2 "$STAMP" | wc -l) jars)"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven is needed once to fetch the broker jars"
    say "fetching the broker jars from Maven Central into $LIB ..."
    TMP_FETCH="$(mktemp -d "${TMPDIR:-/tmp}/streamrec-kafka-lib.XXXXXX")"
    mvn -B -ntp -q -f "$POM" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$TMP_FETCH/lib" >"$TMP_FETCH/mvn.log" 2>&1 || {
        cat "$TMP_FETCH/mvn.log" >&2
        die "maven could not copy the dependencies of $POM"
    }
    compgen -G "$TMP_FETCH/lib/kafka_2.13-*.jar" >/dev/null ||
        die "maven ran but no kafka_2.13 jar arrived in $TMP_FETCH/lib"
    rm -rf -- "$LIB" "$STAMP"
    mv -- "$TMP_FETCH/lib" "$LIB"
    {
        stamp_key
        find "$LIB" -maxdepth 1 -name '*.jar' -printf '%f\n' | LC_ALL=C sort
    } >"$STAMP"
    say "fetched $(tail -n +2 "$STAMP" | wc -l) jars into $LIB"
}

# --- readiness ---------------------------------------------------------------------------------

# The one readiness probe is Python, in the project's environment: streamrec.kafka.broker's
# wait_ready (a real Metadata request until the broker lists itself with the expected cluster id).
# wait_ready bootstrap pid cluster_id -> 0 ready, 1 not within WAIT_S, 2 the process exited
wait_ready() {
    local rc=0
    "$PY" -m streamrec.kafka.broker probe "$1" --timeout-s "$WAIT_S" \
        ${2:+--pid "$2"} ${3:+--cluster-id "$3"} || rc=$?
    return "$rc"
}

# --- subcommands -------------------------------------------------------------------------------

new_cluster_id() { # 22-char base64url UUID, not starting with "-" (argparse would take it as a flag)
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" == -* ]] || break
    done
    printf '%s\n' "$id"
}

prepare_run_dir() {
    if [[ -e "$RUN_DIR" ]]; then
        [[ -d "$RUN_DIR" ]] || die "$RUN_DIR exists and is not a directory"
        if [[ -n "$(ls -A "$RUN_DIR")" && ! -f "$MARKER" ]]; then
            die "refusing to wipe $RUN_DIR: not empty and not a broker run dir (no $(basename "$MARKER"))"
        fi
        rm -rf -- "$RUN_DIR"
    fi
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs"
    : >"$MARKER"
}

render_config() {
    local line out="$RUN_DIR/server.properties"
    [[ "$RUN_DIR" != *\\* ]] || die "run dir must not contain a backslash: $RUN_DIR"
    : >"$out"
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line//@PORT@/"$PORT"}"
        line="${line//@CONTROLLER_PORT@/"$CONTROLLER_PORT"}"
        line="${line//@DATA_DIR@/"$RUN_DIR/data"}"
        if [[ -n "$SSL_PORT" ]]; then
            case "$line" in
                listeners=* | advertised.listeners=*) line="$line,SSL://127.0.0.1:$SSL_PORT" ;;
                listener.security.protocol.map=*) line="$line,SSL:SSL" ;;
            esac
        fi
        if [[ -n "$SASL_PORT" ]]; then
            case "$line" in
                listeners=* | advertised.listeners=*) line="$line,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT" ;;
                listener.security.protocol.map=*) line="$line,SASL_PLAINTEXT:SASL_PLAINTEXT" ;;
            esac
        fi
        printf '%s\n' "$line" >>"$out"
    done <"$TEMPLATE"
    if [[ -n "$SSL_PORT" ]]; then
        cat >>"$out" <<EOF

# TLS listener from STREAMREC_BROKER_SSL_* (broker.sh): server authentication only.
ssl.keystore.type=$SSL_KEYSTORE_TYPE
ssl.keystore.location=$SSL_KEYSTORE
ssl.keystore.password=$SSL_KEYSTORE_PASSWORD
ssl.key.password=$SSL_KEYSTORE_PASSWORD
ssl.client.auth=none
EOF
    fi
    if [[ -n "$SASL_PORT" ]]; then
        cat >>"$out" <<EOF

# SASL/SCRAM listener from STREAMREC_BROKER_SASL_* (broker.sh); users formatted into storage.
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
    if grep -q '@[A-Z_]*@' "$out"; then die "unrendered placeholder in $out"; fi
}

cmd_start() {
    local pid cluster_id t0 rc=0 p
    check_ports
    check_ssl
    PY="$(pick_python)"
    if pid="$(running_pid)"; then
        die "a broker is already running from $RUN_DIR (pid $pid, $(cat "$BOOTSTRAP_FILE" 2>/dev/null)); run '$0 stop' first"
    fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found ($JAVA); Java 17 is needed"
    cmd_fetch
    for p in "$PORT" "$CONTROLLER_PORT" ${SSL_PORT:+"$SSL_PORT"} ${SASL_PORT:+"$SASL_PORT"}; do
        port_free "$p" || die "127.0.0.1:$p is already in use (a broker from an earlier run? see '$0 status', or set STREAMREC_BROKER_PORT / STREAMREC_BROKER_CONTROLLER_PORT)"
    done

    t0=$SECONDS
    prepare_run_dir
    render_config
    cluster_id="$(new_cluster_id)"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
    local -a scram=()
    mapfile -t scram < <(scram_args)
    say "formatting KRaft storage in $RUN_DIR/data (cluster id $cluster_id)"
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        "-Dlog4j.configuration=file:$LOG4J" -cp "$LIB/*" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN_DIR/server.properties" \
        "${scram[@]}" \
        >"$RUN_DIR/logs/format.out" 2>&1 || {
        cat "$RUN_DIR/logs/format.out" >&2
        die "formatting the storage failed"
    }

    local -a jvm_opts extra_opts=()
    jvm_opts=(
        "-Xms$HEAP" "-Xmx$HEAP"
        -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$LOG4J"
        "-Dkafka.logs.dir=$RUN_DIR/logs"
    )
    read -r -a extra_opts <<<"${STREAMREC_BROKER_JVM_OPTS:-}"
    say "starting the broker on 127.0.0.1:$PORT (controller 127.0.0.1:$CONTROLLER_PORT, heap $HEAP)"
    (
        cd "$RUN_DIR"
        exec "$JAVA" "${jvm_opts[@]}" "${extra_opts[@]}" -cp "$LIB/*" \
            kafka.Kafka "$RUN_DIR/server.properties" </dev/null >"$LOG_FILE" 2>&1
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    printf '127.0.0.1:%s\n' "$PORT" >"$BOOTSTRAP_FILE"
    if [[ -n "$SSL_PORT" ]]; then printf '127.0.0.1:%s\n' "$SSL_PORT" >"$SSL_BOOTSTRAP_FILE"; fi
    if [[ -n "$SASL_PORT" ]]; then printf '127.0.0.1:%s\n' "$SASL_PORT" >"$SASL_BOOTSTRAP_FILE"; fi

    wait_ready "127.0.0.1:$PORT" "$pid" "$cluster_id" || rc=$?
    if ((rc != 0)); then
        log_tail 60
        if ((rc == 2)); then
            rm -f "$PID_FILE"
            die "the broker process exited during startup (log: $LOG_FILE)"
        fi
        cmd_stop >/dev/null
        die "the broker did not answer within ${WAIT_S}s; stopped it (log: $LOG_FILE)"
    fi
    say "broker ready after $((SECONDS - t0))s (pid $pid, log $LOG_FILE)"
    if [[ -n "$SSL_PORT" ]]; then say "TLS listener on 127.0.0.1:$SSL_PORT"; fi
    if [[ -n "$SASL_PORT" ]]; then say "SASL/SCRAM-SHA-256 listener on 127.0.0.1:$SASL_PORT"; fi
    printf '127.0.0.1:%s\n' "$PORT"
}

cmd_wait() {
    local pid="" bootstrap cluster_id="" rc=0
    PY="$(pick_python)"
    if pid="$(running_pid)"; then
        bootstrap="$(cat "$BOOTSTRAP_FILE")"
        cluster_id="$(cat "$CLUSTER_ID_FILE" 2>/dev/null || true)"
    else
        pid=""
        bootstrap="127.0.0.1:$PORT"
        say "no broker running from $RUN_DIR; probing $bootstrap anyway"
    fi
    wait_ready "$bootstrap" "$pid" "$cluster_id" || rc=$?
    if ((rc != 0)); then
        if [[ -n "$pid" ]]; then log_tail 60; fi
        die "broker at $bootstrap not ready"
    fi
    printf '%s\n' "$bootstrap"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        printf 'running %s %s\n' "$pid" "$(cat "$BOOTSTRAP_FILE" 2>/dev/null || echo "127.0.0.1:$PORT")"
        return 0
    fi
    echo stopped
    return 3
}

cmd_stop() {
    local pid i
    if ! pid="$(read_pid)"; then
        rm -f "$PID_FILE"
        echo stopped
        return 0
    fi
    if ! is_our_broker "$pid"; then
        rm -f "$PID_FILE"
        say "pid $pid from $PID_FILE is not running (or is not this broker); removed the stale pid file"
        echo stopped
        return 0
    fi
    say "stopping broker pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        say "broker pid $pid still alive after ${STOP_WAIT_S}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
    echo stopped
}

cmd_logs() {
    [[ -f "$LOG_FILE" ]] || die "no broker log at $LOG_FILE"
    case "${1:-100}" in
        -f) tail -n 100 -f "$LOG_FILE" ;;
        *[!0-9]*) die "usage: $0 logs [-f|N]" ;;
        *) tail -n "${1:-100}" "$LOG_FILE" ;;
    esac
}

cmd_consume() {
    (($# >= 2)) || die "usage: $0 consume BOOTSTRAP TOPIC [MAX]"
    [[ -d "$LIB" ]] || cmd_fetch >&2
    local -a args=(
        --bootstrap-server "$1" --topic "$2" --from-beginning
        --timeout-ms "${STREAMREC_CONSUME_IDLE_MS:-10000}"
        --property print.key=true --property key.separator=$'\t'
        --group "streamrec-console-$$-$RANDOM"
    )
    if [[ -n "${3:-}" ]]; then args+=(--max-messages "$3"); fi
    exec "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        "-Dlog4j.configuration=file:$KAFKA_DIR/tools-log4j.properties" -cp "$LIB/*" \
        org.apache.kafka.tools.consumer.ConsoleConsumer "${args[@]}"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [[ $# -eq 0 ]] || shift
    case "$cmd" in
        fetch) cmd_fetch "${1:-}" ;;
        start) cmd_start ;;
        wait) cmd_wait ;;
        status) cmd_status ;;
        stop) cmd_stop ;;
        logs) cmd_logs "$@" ;;
        consume) cmd_consume "$@" ;;
        *) usage ;;
    esac
}

PY=""
main "$@"
