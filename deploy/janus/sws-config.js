// simple-whip-server configuration for deploy/docker-compose.yml: Janus is the `janus`
// service; WHIP endpoints under http://whip-server:7080/whip/endpoint/{id}.
module.exports = {
	janus: { address: 'ws://janus:8188' },
	port: 7080,
	rest: '/whip',
	allowTrickle: true,
	strictETags: false,
	iceServers: []
};
