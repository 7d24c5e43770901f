"""POST+DELETE cycles one after another on one keep-alive connection, for scripts/bench-proxy
--callgrind: the proxy under valgrind is far too slow for wrk, and a count of instructions
needs a known number of cycles, not a rate.

Usage: sequential_cycles.py PORT CYCLES OFFER_FILE
Exits 1 at the first answer that is not 201 (POST, with a Location) or 200 (DELETE).
"""
import socket
import sys


def main() -> int:
    port, cycles, offer_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(offer_path, "rb") as f:
        offer = f.read()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""

    def answer():
        nonlocal pending
        while b"\r\n\r\n" not in pending:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("sequential_cycles: the proxy closed the connection")
            pending += chunk
        head, _, rest = pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length, location = 0, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"location":
                location = value.strip()
        while len(rest) < length:
            rest += sock.recv(65536)
        pending = rest[length:]
        return status, location

    for i in range(cycles):
        sock.sendall(
            b"POST /whip/bench%d HTTP/1.1\r\nHost: bench\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: %d\r\n\r\n" % (i % 50, len(offer)) + offer
        )
        status, location = answer()
        if status != 201 or not location:
            print(f"sequential_cycles: POST {i} answered {status}", file=sys.stderr)
            return 1
        path = b"/" + location.split(b"/", 3)[3] if location.startswith(b"http") else location
        sock.sendall(b"DELETE " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
        status, _ = answer()
        if status != 200:
            print(f"sequential_cycles: DELETE {i} answered {status}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
