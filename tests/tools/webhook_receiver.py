#!/usr/bin/env python3
"""A webhook receiver for Baton's EventSink tests, independent of Baton's code.

Serves HTTPS on 127.0.0.1:<port>. Each `--sink PATH=SECRET` is an endpoint: a POST to PATH is
verified with the Standard Webhooks reference library (`standardwebhooks`) against SECRET and
parsed as a CloudEvent with the CloudEvents SDK (`cloudevents`). Every request is appended to
`--out` as one JSON line: path, whether the signature verified, the webhook-id and the event's
id, type, subject and data. While the file `--down` exists, every request to the path it names
(to every path when it is empty) is answered 503 (recorded as `"down": true`), so a test can
take an endpoint down and up again.

Answers: 204 when verified and parsed, 401 when the signature does not verify, 400 when the
body is not a CloudEvent, 404 for an unknown path.
"""

import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--down", required=True)
    parser.add_argument("--sink", action="append", default=[])
    args = parser.parse_args()
    sinks = {}
    for s in args.sink:
        path, secret = s.split("=", 1)
        sinks[path] = Webhook(secret)

    def record(entry):
        with LOCK:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def answer(self, code):
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {"path": self.path, "webhookId": headers.get("webhook-id")}
            if os.path.exists(args.down):
                with open(args.down, encoding="utf-8") as f:
                    which = f.read().strip()
                if not which or which == self.path:
                    entry["down"] = True
                    record(entry)
                    return self.answer(503)
            hook = sinks.get(self.path)
            if hook is None:
                entry["unknownPath"] = True
                record(entry)
                return self.answer(404)
            try:
                hook.verify(body, headers)
                entry["verified"] = True
            except Exception as e:  # the library raises WebhookVerificationError
                entry["verified"] = False
                entry["error"] = str(e)
                record(entry)
                return self.answer(401)
            try:
                event = from_http(headers, body)
            except Exception as e:
                entry["cloudevent"] = False
                entry["error"] = str(e)
                record(entry)
                return self.answer(400)
            entry["cloudevent"] = True
            entry["contentType"] = headers.get("content-type")
            entry["id"] = event["id"]
            entry["type"] = event["type"]
            entry["subject"] = event["subject"]
            entry["source"] = event["source"]
            entry["data"] = event.data
            record(entry)
            return self.answer(204)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
