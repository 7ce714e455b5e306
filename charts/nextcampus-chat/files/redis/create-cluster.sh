#!/bin/sh
# Forms the Redis Cluster of the StatefulSet once all its nodes answer; does nothing when it
# is already formed (every install and upgrade runs this Job). A half-formed cluster is not
# touched: the Job fails and says so.
set -eu
hosts=""
i=0
while [ "$i" -lt "$REPLICAS" ]; do
  hosts="$hosts $STATEFULSET-$i.$HEADLESS_SERVICE"
  i=$((i + 1))
done
for host in $hosts; do
  until [ "$(redis-cli -h "$host" ping 2>/dev/null)" = "PONG" ]; do
    echo "waiting for $host …"
    sleep 2
  done
done
first=${hosts# }
first=${first%% *}
info=$(redis-cli -h "$first" cluster info)
known=$(echo "$info" | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if echo "$info" | grep -q '^cluster_state:ok' && [ "$known" -ge "$REPLICAS" ]; then
  echo "the cluster is formed ($known nodes)"
  exit 0
fi
for host in $hosts; do
  slots=$(redis-cli -h "$host" cluster info | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p')
  if [ "$slots" != "0" ]; then
    echo "$host already serves $slots slots but the cluster is not ok: refusing to create a new one over it; see CLUSTER NODES"
    exit 1
  fi
done
addresses=""
for host in $hosts; do
  ip=$(getent hosts "$host" | awk '{ print $1; exit }')
  addresses="$addresses $ip:6379"
done
# shellcheck disable=SC2086 # one argument per node
redis-cli --cluster create $addresses --cluster-replicas "$REPLICAS_PER_PRIMARY" --cluster-yes
until redis-cli -h "$first" cluster info | grep -q '^cluster_state:ok'; do
  sleep 1
done
echo "the cluster is formed"
