#!/usr/bin/python3
"""A baton.v1.Filter gRPC service in Python (grpcio), for baton-filter's tests: an independent
implementation of proto/baton/v1/filter.proto, compiled here with grpcio-tools.

It listens on a loopback port the kernel chooses and prints `PORT <n>` once it serves. Verdicts:
- a message containing BATON-TEST-REJECT is rejected with a client text (and a multi-line text
  Baton must clean);
- BATON-TEST-TEMPFAIL: a temporary failure; BATON-TEST-QUARANTINE: quarantine with a reason;
- BATON-TEST-UNSPECIFIED: an answer without an action (a failure of the filter);
- BATON-TEST-SLOW: no answer until the client gives up (at most 60 s);
- anything else is accepted with `X-Filter-Checked` (echoing the request's context, so the test
  sees what arrived) added and `X-Internal-Route` removed.

Usage: filter_server.py --proto-root DIR --out DIR
"""

import argparse
import os
import sys
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proto-root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    rc = protoc.main([
        "protoc",
        f"-I{args.proto_root}",
        f"--python_out={args.out}",
        f"--grpc_python_out={args.out}",
        "baton/v1/filter.proto",
    ])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, args.out)
    from baton.v1 import filter_pb2, filter_pb2_grpc  # noqa: E402

    class Filter(filter_pb2_grpc.FilterServicer):
        def Check(self, request, context):
            msg = request.message
            if b"BATON-TEST-SLOW" in msg:
                done = threading.Event()
                context.add_callback(done.set)
                done.wait(60)
                return filter_pb2.FilterResponse(action=filter_pb2.FILTER_ACTION_ACCEPT)
            if b"BATON-TEST-REJECT" in msg:
                return filter_pb2.FilterResponse(
                    action=filter_pb2.FILTER_ACTION_REJECT,
                    text="Message refused by policy\r\n(marker found)",
                    reason="marker BATON-TEST-REJECT in the body",
                )
            if b"BATON-TEST-TEMPFAIL" in msg:
                return filter_pb2.FilterResponse(
                    action=filter_pb2.FILTER_ACTION_TEMPFAIL, text="Policy check pending")
            if b"BATON-TEST-QUARANTINE" in msg:
                return filter_pb2.FilterResponse(
                    action=filter_pb2.FILTER_ACTION_QUARANTINE, reason="held for review")
            if b"BATON-TEST-UNSPECIFIED" in msg:
                return filter_pb2.FilterResponse()
            seen = "sender={} rcpts={} ip={} helo={} user={} domain={} qid={} size={}".format(
                request.sender or "<>", ",".join(request.recipients),
                request.client_address or "-", request.helo or "-",
                request.authenticated_user or "-", request.relay_domain or "-",
                request.queue_id or "-", len(msg))
            return filter_pb2.FilterResponse(
                action=filter_pb2.FILTER_ACTION_ACCEPT,
                add_headers=[filter_pb2.FilterHeader(name="X-Filter-Checked", value=seen)],
                remove_headers=["X-Internal-Route"],
                reason="clean",
            )

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    filter_pb2_grpc.add_FilterServicer_to_server(Filter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        sys.exit("cannot bind")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    os.umask(0o077)
    main()
