#!/bin/sh
# Runs simple-whip-server, then creates one WHIP endpoint per name in $WHIP_ENDPOINTS (VideoRoom
# room $JANUS_ROOM, no token) once it answers: simple-whip-server keeps its endpoints in memory,
# so they are made again on every start. Exits when simple-whip-server does.
set -eu
ENDPOINTS=${WHIP_ENDPOINTS:-demo test}
ROOM=${JANUS_ROOM:-1234}
cd /usr/share/simple-whip-server
node src/server.js &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
# simple-whip-server answers HTTP only once it is connected to Janus.
until curl -fsS -m 2 -o /dev/null http://127.0.0.1:7080/whip/healthcheck; do
	kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit $?; }
	sleep 1
done
for id in $ENDPOINTS; do
	# The label must be unique per endpoint (two publishers with one label crash the server).
	curl -fsS -m 5 -H 'Content-Type: application/json' -X POST http://127.0.0.1:7080/whip/create \
		-d "{\"id\":\"$id\",\"room\":$ROOM,\"label\":\"whipgate-compose-$id\"}" >/dev/null
	echo "whip-server: endpoint $id ready: publish through whipgate to http://localhost:8080/whip/$id"
done
wait "$pid"
