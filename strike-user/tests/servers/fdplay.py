"""A one-connection-at-a-time HTTP server (stdlib only, raw sockets) that ends sockets the
ways a capture tool can miss, then reuses their fd numbers for a file it reads a request
from and writes a response to. A tool that still took that fd for the socket would report
a request the network never carried (model `leaked-model`).

After answering a request, its `x-then` header says what to do with the connection:
- `close_range`: close it with close_range(2) (os.closerange), reuse the fd for a file;
- `dup2`: dup2(2) a file over it, then use the fd;
- anything else: close(2) it.
A connection whose first bytes are not HTTP is echoed until the peer closes it.
Prints the port, then one line per connection: `fd N then WHAT reused M`."""
import json
import os
import socket
import sys
import tempfile

LEAK_REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\n"
    b"content-length: 56\r\n\r\n"
    b'{"model":"leaked-model","messages":[{"role":"user"}]}   '
)


def response(body):
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


def completion(rid):
    return json.dumps({
        "id": rid,
        "object": "chat.completion",
        "model": "fdplay-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }).encode()


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data, None
        data += chunk
        if not data[:4].isalpha():
            return data, None
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    need = int(headers.get("content-length", "0"))
    while len(body) < need:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return data, headers


def reuse(fd):
    """Reads the leak request from a file now at `fd` and writes a response to it."""
    os.lseek(fd, 0, os.SEEK_SET)
    os.read(fd, 65536)
    os.write(fd, response(completion("chatcmpl-LEAKED")))


SCRATCH = os.path.join(tempfile.mkdtemp(prefix="fdplay-"), "leak")


def leak_file():
    """A file holding the leak request, at the lowest free fd (plain syscalls only)."""
    fd = os.open(SCRATCH, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, LEAK_REQUEST)
    return fd


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
n = 0
while True:
    conn, _ = listener.accept()
    fd = conn.fileno()
    first, headers = read_request(conn)
    if headers is None:
        # Not HTTP: echo until the peer closes.
        while first:
            conn.sendall(first)
            first = conn.recv(65536)
        conn.close()
        print(f"fd {fd} then echo reused -", flush=True)
        continue
    n += 1
    conn.sendall(response(completion(f"chatcmpl-fdplay-{n}")))
    then = headers.get("x-then", "close")
    reused = "-"
    if then == "close_range":
        conn.detach()
        os.closerange(fd, fd + 1)  # close_range(fd, fd, 0)
        f = leak_file()  # the lowest free fd: the socket's
        reused = str(f)
        reuse(f)
        os.close(f)
    elif then == "dup2":
        f = leak_file()
        conn.detach()
        os.dup2(f, fd)
        os.close(f)
        reused = str(fd)
        reuse(fd)
        os.close(fd)
    else:
        conn.close()
    print(f"fd {fd} then {then} reused {reused}", flush=True)
