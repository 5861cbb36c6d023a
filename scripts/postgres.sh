#!/usr/bin/env bash
# A private PostgreSQL server for the tests and benchmarks, from Debian's packages.
#
#   scripts/postgres.sh start DIR [CERT KEY]
#                                   installs PostgreSQL if it is missing, starts a new cluster in DIR
#                                   on a free loopback port (trust authentication, user coffer,
#                                   database coffer_test) and prints its URL; with a certificate
#                                   and key (PEM), it accepts TLS connections only
#   scripts/postgres.sh stop DIR    stops that cluster (start DIR again brings it back on the same
#                                   port, with its data)
#
# Nothing is shared with a system cluster: the data, socket and log live in DIR.
set -euo pipefail

cmd="${1:-}"
dir="${2:-}"
ssl_cert="${3:-}"
ssl_key="${4:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# PostgreSQL refuses to run as root; as root, the cluster belongs to Debian's postgres user.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
        echo "installing PostgreSQL from Debian's packages" >&2
        $sudo apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
            postgresql postgresql-contrib >&2
    fi
    bin="$(pg_bin)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U coffer --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
        if [ -n "$ssl_cert" ]; then
            cp "$ssl_cert" "$dir/data/server.crt"
            cp "$ssl_key" "$dir/data/server.key"
            chmod 600 "$dir/data/server.key"
            if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/data/server.crt" "$dir/data/server.key"; fi
            printf 'ssl = on\n' >>"$dir/data/postgresql.conf"
            # TCP clients must use TLS; the local socket (for createdb here) need not.
            printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
        fi
    fi
    # A restarted cluster keeps its port, so that clients reconnect to it.
    if [ -f "$dir/port" ]; then
        port="$(cat "$dir/port")"
    else
        port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300" start >&2 ||
        { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    if ! as_owner "$bin/psql" -h "$dir" -p "$port" -U coffer -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'coffer_test'" | grep -q 1; then
        as_owner "$bin/createdb" -h "$dir" -p "$port" -U coffer coffer_test
    fi
    echo "postgres://coffer@127.0.0.1:$port/coffer_test"
    ;;
stop)
    bin="$(pg_bin)"
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
