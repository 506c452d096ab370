#!/usr/bin/env bash
# A real 3-node RabbitMQ cluster on this machine, from the installed Debian
# package, for trying out and testing fanout-bridge against node failures.
#
#   scripts/cluster.sh up              start c1..c3@localhost and join them (idempotent)
#   scripts/cluster.sh down            kill every node and epmd, remove the folder
#   scripts/cluster.sh status          which nodes run, and the cluster's view
#   scripts/cluster.sh kill NODE       kill -9 of that node's Erlang VM
#   scripts/cluster.sh stop NODE       graceful stop of that node
#   scripts/cluster.sh start NODE      start it again; returns once it runs in the cluster
#   scripts/cluster.sh leader QUEUE    the node leading quorum queue QUEUE (vhost /)
#   scripts/cluster.sh urls            the AMQP URLs, comma-separated (for BRIDGE_AMQP_URL)
#
# NODE is c1, c2, c3 (or 1..3, or c1@localhost).
#
# Node cN: name cN@localhost, AMQP on 127.0.0.1:568N (guest/guest), Erlang
# distribution on 127.0.0.1:2568N. Everything lives under $CLUSTER_DIR
# (default /tmp/fanout-bridge-cluster): its own Erlang cookie and HOME, config,
# data and logs per node, and a private epmd on 127.0.0.1:$CLUSTER_EPMD_PORT
# (default 4371). The machine's own broker (5672, /etc/rabbitmq,
# /var/lib/rabbitmq, the system epmd on 4369, /root/.erlang.cookie) is never
# read or touched: the tools in /usr/lib/rabbitmq/bin are called directly
# (the /usr/sbin wrappers switch to the rabbitmq user and its cookie) with
# HOME and every RABBITMQ_* setting pointing into $CLUSTER_DIR.
# Works as root and as any user who can run the Erlang binaries.
set -euo pipefail

DIR="${CLUSTER_DIR:-/tmp/fanout-bridge-cluster}"
RMQ="${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}"
EPMD_PORT="${CLUSTER_EPMD_PORT:-4371}"
NODES=(c1 c2 c3)
BOOT_TIMEOUT="${CLUSTER_BOOT_TIMEOUT:-60}"

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

amqp_port() { echo $((5680 + ${1#c})); }
dist_port() { echo $((25680 + ${1#c})); }

# Normalises c1 / 1 / c1@localhost to c1.
node_arg() {
    local n="${1:-}"
    n="${n%@localhost}"
    n="c${n#c}"
    case "$n" in c1 | c2 | c3) echo "$n" ;; *) die "unknown node '${1:-}' (c1, c2 or c3)" ;; esac
}

# ---------------------------------------------------------------- environment
# Nothing of the caller's Erlang/RabbitMQ settings leaks in; everything the
# tools read points into $DIR.
clean_env() {
    local v
    for v in $(compgen -e); do
        case "$v" in RABBITMQ_* | ERL_* | CTL_*) unset "$v" ;; esac
    done
    export HOME="$DIR"
    export ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    # The CLI tools' own distribution ports (one per concurrent call).
    export RABBITMQ_CTL_DIST_PORT_MIN=25700 RABBITMQ_CTL_DIST_PORT_MAX=25760
    export RABBITMQ_CONFIG_FILE="$DIR/cli.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
}

node_env() {
    local n="$1"
    export RABBITMQ_NODENAME="$n@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    export RABBITMQ_DIST_PORT="$(dist_port "$n")"
    export RABBITMQ_CONFIG_FILE="$DIR/$n/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    export RABBITMQ_MNESIA_BASE="$DIR/$n/data"
    export RABBITMQ_LOG_BASE="$DIR/$n/log"
    export RABBITMQ_PID_FILE="$DIR/$n/beam.pid"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export ERL_CRASH_DUMP="$DIR/$n/erl_crash.dump"
}

ctl() { (cd "$DIR" && "$RMQ/rabbitmqctl" "$@"); }
queues() { (cd "$DIR" && "$RMQ/rabbitmq-queues" "$@"); }

# ---------------------------------------------------------------- files
prepare() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ ! -s "$DIR/.erlang.cookie" ]; then
        (umask 077 && head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$DIR/.erlang.cookie")
    fi
    chmod 400 "$DIR/.erlang.cookie"
    : >"$DIR/rabbitmq-env.conf"
    echo '[].' >"$DIR/enabled_plugins"
    echo '[].' >"$DIR/advanced.config"
    echo '# rabbitmqctl/rabbitmq-queues read this; the nodes have their own' >"$DIR/cli.conf"
    local n
    for n in "${NODES[@]}"; do
        mkdir -p "$DIR/$n/data" "$DIR/$n/log"
        cat >"$DIR/$n/rabbitmq.conf" <<EOF
# Node $n of the fanout-bridge test cluster (scripts/cluster.sh).
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
# As in deploy/kubernetes/rabbitmq-cluster.yaml.
cluster_partition_handling = pause_minority
# Small footprint for a shared machine.
disk_free_limit.absolute = 50MB
raft.wal_max_size_bytes = 64000000
log.console = false
log.file.level = info
EOF
    done
}

# ---------------------------------------------------------------- processes
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$DIR/$1/$2" 2>/dev/null || true; }

# The Erlang VM's PID: the node writes it to its pid file once booting.
beam_pid() {
    local p
    p="$(pid_of "$1" beam.pid)"
    # (The node name is not on the VM's command line, but in its environment.)
    if alive "$p" && tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$1@localhost"; then
        echo "$p"
    fi
}

epmd_running() { alive "$(cat "$DIR/epmd.pid" 2>/dev/null || true)"; }

start_epmd() {
    epmd_running && return 0
    local epmd
    epmd="$(command -v epmd || true)"
    [ -n "$epmd" ] || epmd="$(ls /usr/lib/erlang/erts-*/bin/epmd | head -1)"
    setsid "$epmd" -port "$EPMD_PORT" -address 127.0.0.1 </dev/null >"$DIR/epmd.log" 2>&1 &
    echo $! >"$DIR/epmd.pid"
    local i
    for i in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$EPMD_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    die "epmd did not listen on 127.0.0.1:$EPMD_PORT (see $DIR/epmd.log)"
}

# Starts node $1 in the background (its own session: `down` kills the group).
spawn_node() {
    local n="$1"
    [ -n "$(beam_pid "$n")" ] && return 0
    # Leftovers of a killed node (its wrapper shell) go first.
    local w
    w="$(pid_of "$n" session.pid)"
    if alive "$w"; then kill -9 -- "-$w" 2>/dev/null || true; fi
    rm -f "$DIR/$n/beam.pid"
    (
        node_env "$n"
        cd "$DIR"
        exec setsid "$RMQ/rabbitmq-server" </dev/null >>"$DIR/$n/log/stdout.log" 2>&1
    ) &
    echo $! >"$DIR/$n/session.pid"
}

# Waits until node $1 has booted (rabbitmqctl await_startup fails at once
# until the node is registered with epmd, so it is retried).
await_node() {
    local n="$1" deadline=$((SECONDS + BOOT_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ctl -q -n "$n@localhost" await_startup --timeout 30 >/dev/null 2>&1; then
            return 0
        fi
        if ! alive "$(pid_of "$n" session.pid)" && [ -z "$(beam_pid "$n")" ]; then
            tail -n 30 "$DIR/$n/log/stdout.log" "$DIR/$n/log/$n@localhost.log" >&2 2>/dev/null || true
            die "node $n exited while booting (logs in $DIR/$n/log)"
        fi
        sleep 0.5
    done
    die "node $n did not boot within ${BOOT_TIMEOUT}s (logs in $DIR/$n/log)"
}

# Node names in the JSON list $2 of `cluster_status --formatter json` as
# node $1 sees it, one per line (no jq needed).
status_list() {
    ctl -q -n "$1@localhost" cluster_status --formatter json 2>/dev/null |
        grep -o "\"$2\":\\[[^]]*\\]" | grep -o 'c[0-9]@localhost' || true
}
running_nodes() { status_list "$1" running_nodes; }
disk_nodes() { status_list "$1" disk_nodes; }

# Waits until node $1 sees all three nodes running.
await_cluster() {
    local n="$1" deadline=$((SECONDS + BOOT_TIMEOUT))
    while ((SECONDS < deadline)); do
        [ "$(running_nodes "$n" | wc -l)" -eq 3 ] && return 0
        sleep 0.5
    done
    die "node $n does not see 3 running nodes after ${BOOT_TIMEOUT}s: $(running_nodes "$n" | tr '\n' ' ')"
}

join() {
    local n="$1"
    if disk_nodes "$n" | grep -qx "c1@localhost"; then return 0; fi
    say "joining $n to c1"
    ctl -q -n "$n@localhost" stop_app >/dev/null
    ctl -q -n "$n@localhost" join_cluster c1@localhost >/dev/null
    ctl -q -n "$n@localhost" start_app >/dev/null
}

first_running() {
    local n
    for n in "${NODES[@]}"; do
        if [ -n "$(beam_pid "$n")" ]; then echo "$n"; return 0; fi
    done
    return 1
}

# ---------------------------------------------------------------- commands
cmd_up() {
    local t0=$SECONDS n
    [ -x "$RMQ/rabbitmq-server" ] ||
        die "no RabbitMQ in $RMQ: install Debian's rabbitmq-server package (or set RABBITMQ_BIN_DIR)"
    prepare
    start_epmd
    for n in "${NODES[@]}"; do spawn_node "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    for n in c2 c3; do join "$n"; done
    await_cluster c1
    say "up in $((SECONDS - t0))s: $(cmd_urls)"
}

cmd_down() {
    local n p
    if [ -d "$DIR" ]; then
        for n in "${NODES[@]}"; do
            p="$(beam_pid "$n")"
            if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
            p="$(pid_of "$n" session.pid)"
            if alive "$p"; then kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; fi
        done
        p="$(cat "$DIR/epmd.pid" 2>/dev/null || true)"
        if alive "$p"; then kill -9 "$p" 2>/dev/null || true; fi
        # The VMs are gone before their files are.
        for n in "${NODES[@]}"; do
            for p in "$(pid_of "$n" beam.pid)" "$(pid_of "$n" session.pid)"; do
                local i
                for i in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
            done
        done
        rm -rf "$DIR"
    fi
    say "down"
}

cmd_kill() {
    local n p
    n="$(node_arg "${1:-}")"
    p="$(beam_pid "$n")"
    [ -n "$p" ] || die "node $n is not running"
    kill -9 "$p"
    local i
    for i in $(seq 1 100); do alive "$p" || break; sleep 0.05; done
    alive "$p" && die "node $n (pid $p) survived kill -9"
    rm -f "$DIR/$n/beam.pid"
    say "killed $n (pid $p)"
}

cmd_stop() {
    local n p
    n="$(node_arg "${1:-}")"
    p="$(beam_pid "$n")"
    [ -n "$p" ] || die "node $n is not running"
    # `stop PIDFILE` returns once the VM has exited.
    ctl -q -n "$n@localhost" stop "$DIR/$n/beam.pid" >/dev/null
    say "stopped $n"
}

cmd_start() {
    local n
    n="$(node_arg "${1:-}")"
    [ -d "$DIR/$n/data" ] || die "no cluster in $DIR (run: $0 up)"
    start_epmd
    spawn_node "$n"
    await_node "$n"
    await_cluster "$n"
    say "started $n"
}

cmd_status() {
    [ -d "$DIR" ] || { echo "no cluster ($DIR does not exist)"; return 3; }
    local n p up=0
    for n in "${NODES[@]}"; do
        p="$(beam_pid "$n")"
        if [ -n "$p" ]; then
            up=$((up + 1))
            echo "$n@localhost  pid $p  amqp 127.0.0.1:$(amqp_port "$n")  dist $(dist_port "$n")"
        else
            echo "$n@localhost  not running"
        fi
    done
    if n="$(first_running)"; then
        echo "running in the cluster (as $n sees it): $(running_nodes "$n" | tr '\n' ' ')"
    fi
    [ "$up" -eq 3 ]
}

cmd_leader() {
    local q="${1:-}" n
    [ -n "$q" ] || die "usage: $0 leader QUEUE"
    n="$(first_running)" || die "no node is running"
    # One JSON object per member: {"Node Name":"c1@localhost","Raft State":"leader",...}
    queues -q -n "$n@localhost" quorum_status "$q" --formatter json |
        grep '"Raft State":"leader"' | grep -o '"Node Name":"[^"]*"' | cut -d'"' -f4 | grep . ||
        die "no leader for $q"
}

cmd_urls() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
    (IFS=,; echo "${out[*]}")
}

main() {
    local cmd="${1:-}"
    shift || true
    clean_env
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        kill) cmd_kill "$@" ;;
        stop) cmd_stop "$@" ;;
        start) cmd_start "$@" ;;
        leader) cmd_leader "$@" ;;
        urls) cmd_urls ;;
        *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
