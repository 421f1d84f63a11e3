"""A prefork HTTP server (stdlib only): the parent binds and listens, then, when a line
arrives on stdin, forks a worker that serves on the inherited socket while the parent
waits. Prints the port, then the worker's pid. The responses are OpenAI-shaped JSON with
usage, and the response id names the worker's pid."""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({
            "id": f"chatcmpl-{os.getpid()}",
            "object": "chat.completion",
            "model": "prefork-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    server.serve_forever()
else:
    print(pid, flush=True)
    os.waitpid(pid, 0)
