# Helpers shared by bench/run and bench/gateway (sourced, not run). They expect WORK (the run's
# temporary directory) to be set before wait_http is called.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# A free TCP port on 127.0.0.1, below the ephemeral range (so no outgoing connection of the
# load generator can hold it) and used by no socket at all.
free_port() {
    local p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 11000 ] || low=60000
    for _ in $(seq 200); do
        p=$(( 10000 + RANDOM % (low - 10000) ))
        if command -v ss >/dev/null; then
            [ -z "$(ss -tanH "( sport = :$p )" 2>/dev/null)" ] && { echo "$p"; return; }
        elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return
        fi
    done
    die "no free port found"
}

# Wait (bounded) until a URL answers 200.
wait_http() {
    local url=$1 pid=$2 name=$3
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $WORK/$name.log"
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return; fi
        sleep 0.2
    done
    die "$name did not answer $url within 60 s; see $WORK/$name.log"
}

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

# Stop processes by id: SIGTERM, a bounded wait, then SIGKILL.
stop_pids() {
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# Make sure the PostgreSQL server at $PG_URL runs (starting the machine's cluster with
# pg_ctlcluster if it is down), create the database $DB on it and set DB_CREATED=1 and
# DATABASE_URL.
pg_create_db() {
    local hostport host port
    hostport=${PG_URL#*@}
    host=${hostport%%:*}
    port=${hostport##*:}; port=${port%%/*}
    if ! pg_isready -q -h "$host" -p "$port"; then
        if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
            log "starting PostgreSQL"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
        fi
        for _ in $(seq 50); do pg_isready -q -h "$host" -p "$port" && break; sleep 0.2; done
        pg_isready -q -h "$host" -p "$port" || die "PostgreSQL is not running at $host:$port"
    fi
    psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $DB" >/dev/null
    DB_CREATED=1
    DATABASE_URL=$PG_URL/$DB
}

# Drop $DB if this run created it.
pg_drop_db() {
    if [ "${DB_CREATED:-0}" = 1 ]; then
        psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 \
            || log "could not drop database $DB"
    fi
}
