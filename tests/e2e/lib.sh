# shellcheck shell=bash
# Shared by tests/e2e/janus.sh and scripts/janus-backend (source it; it defines functions only):
#   janus_lib_dir                  Janus' plugin tree (/usr/lib/<triplet>/janus on Debian)
#   janus_write_config DIR ADMIN_SECRET ROOM DESCRIPTION [ICE_ENFORCE_LIST]
#                                  a self-contained Janus 1.1.2 config folder in DIR: run it with
#                                  `janus -F DIR -C DIR/janus.jcfg -o`. HTTP API on
#                                  127.0.0.1:8088, Admin API on 127.0.0.1:7088, websockets on
#                                  127.0.0.1:8188, VideoRoom room ROOM (opus; vp8,h264).
#                                  Without ICE_ENFORCE_LIST Janus gathers on every interface.
#   netns_add_veth NS              give the (new, empty) network namespace NS an up `lo` and a
#                                  veth pair v0/v1, with 127.0.0.2/32 on v0: Janus gathers no
#                                  ICE candidate on loopback-only interfaces, this gives it one.

janus_lib_dir() {
  local d
  for d in /usr/lib/*/janus /usr/lib/janus /usr/local/lib/janus /opt/janus/lib/janus; do
    if [ -d "$d/plugins" ] && [ -d "$d/transports" ]; then echo "$d"; return 0; fi
  done
  return 1
}

janus_write_config() {
  local dir=$1 secret=$2 room=$3 description=$4 enforce=${5:-} lib enforce_line=
  lib=$(janus_lib_dir) || { echo "janus_write_config: Janus plugins folder not found" >&2; return 1; }
  [ -z "$enforce" ] || enforce_line="ice_enforce_list = \"$enforce\""
  mkdir -p "$dir" || return 1
  cat >"$dir/janus.jcfg" <<EOF
general: {
  configs_folder = "$dir"
  plugins_folder = "$lib/plugins"
  transports_folder = "$lib/transports"
  events_folder = "$lib/events"
  loggers_folder = "$lib/loggers"
  debug_level = 4
  admin_secret = "$secret"
  session_timeout = 60
  protected_folders = [ "/bin", "/boot", "/dev", "/etc", "/initrd", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var" ]
}
certificates: {
}
media: {
  ipv6 = false
  rtp_port_range = "20000-20999"
}
nat: {
  ${enforce_line}
  full_trickle = false
  nice_debug = false
}
plugins: {
  disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
  disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so,libjanus_pfunix.so"
}
loggers: {
  disable = "libjanus_jsonlog.so"
}
events: {
  broadcast = false
}
EOF
  cat >"$dir/janus.transport.websockets.jcfg" <<'EOF'
general: {
  json = "indented"
  ws = true
  ws_port = 8188
  ws_ip = "127.0.0.1"
  wss = false
}
admin: {
  admin_ws = false
}
EOF
  cat >"$dir/janus.transport.http.jcfg" <<'EOF'
general: {
  json = "indented"
  base_path = "/janus"
  http = true
  port = 8088
  ip = "127.0.0.1"
  https = false
}
admin: {
  admin_base_path = "/admin"
  admin_http = true
  admin_port = 7088
  admin_ip = "127.0.0.1"
  admin_https = false
}
EOF
  cat >"$dir/janus.plugin.videoroom.jcfg" <<EOF
general: {
  admin_key = "supersecret"
}
room-$room: {
  description = "$description"
  secret = "adminpwd"
  publishers = 6
  bitrate = 512000
  fir_freq = 10
  audiocodec = "opus"
  videocodec = "vp8,h264"
}
EOF
}

netns_add_veth() {
  local ns=$1
  ip netns exec "$ns" ip link set lo up &&
    ip netns exec "$ns" ip link add v0 type veth peer name v1 &&
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.v0.disable_ipv6=1 net.ipv6.conf.v1.disable_ipv6=1 &&
    ip netns exec "$ns" ip addr add 127.0.0.2/32 dev v0 &&
    ip netns exec "$ns" ip link set v0 up &&
    ip netns exec "$ns" ip link set v1 up
}
