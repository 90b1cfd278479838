#!/bin/sh
# Creates the cluster on first start (user mlapp, password $POSTGRES_PASSWORD, database mlapp),
# then runs the server in the foreground as the postgres user.
set -eu
data=/var/lib/postgresql/data
bin=
for b in /usr/lib/postgresql/*/bin; do bin=$b; done
if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data" && chown postgres: "$data"
    pw=$(mktemp) && printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" >"$pw" && chown postgres: "$pw"
    runuser -u postgres -- "$bin/initdb" -D "$data" -U mlapp --pwfile="$pw" --auth=scram-sha-256 -E UTF8
    rm -f "$pw"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w start -o "-c listen_addresses=127.0.0.1"
    runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -U mlapp mlapp </dev/null || true
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop
fi
exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses='*'
