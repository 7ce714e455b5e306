#!/bin/sh
# Starts one Redis Cluster node of the StatefulSet. Pod IPs change on every restart, and
# nodes.conf remembers each peer by IP (and, with cluster-announce-hostname, by name): the
# IPs are refreshed from DNS first, or a cluster whose pods all restarted at once could
# never find each other again.
set -eu
conf=/data/nodes.conf
if [ -f "$conf" ]; then
  fresh=$(mktemp)
  while read -r id addr rest; do
    if [ "$id" != "vars" ]; then
      name=${addr#*,}                      # ip:port@cport,hostname
      if [ "$name" != "$addr" ] && [ -n "$name" ]; then
        ip=$(getent hosts "$name" | awk '{ print $1; exit }' || true)
        if [ -n "$ip" ]; then
          addr="$ip:${addr#*:}"
        fi
      fi
    fi
    echo "$id $addr $rest"
  done < "$conf" > "$fresh"
  cat "$fresh" > "$conf"
  rm -f "$fresh"
fi
# The password (from the Secret, in the env) reaches redis-server as config lines on its
# stdin (the final `-`): not in its arguments, which `ps` shows to every process of the pod,
# nor in a file. Written as \xHH escapes, any byte of it survives Redis's config parser.
: "${REDIS_PASSWORD:?is not set: every node needs the password from the Secret of the chart}"
password=$(printf '%s' "$REDIS_PASSWORD" | od -An -v -tx1 | tr -d ' \n' | sed 's/../\\x&/g')
exec redis-server /etc/redis/redis.conf \
  --cluster-announce-hostname "$POD_NAME.$HEADLESS_SERVICE" \
  --cluster-node-timeout "$NODE_TIMEOUT_MS" \
  --appendfsync "$APPENDFSYNC" \
  --min-replicas-to-write "$MIN_REPLICAS_TO_WRITE" \
  --min-replicas-max-lag "$MIN_REPLICAS_MAX_LAG" \
  - <<EOF
requirepass "$password"
masterauth "$password"
EOF
