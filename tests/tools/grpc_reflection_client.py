#!/usr/bin/env python3
"""An independent client of Baton's operations API: Python grpcio, no .proto file.

It learns the schema from the server through gRPC server reflection, checks the standard
health service, then calls one Admin method with a bearer token and prints the answer as JSON.

    grpc_reflection_client.py ADDR TOKEN_FILE METHOD REQUEST_JSON

Exit status 0 when the call succeeded; otherwise the gRPC status code name on stderr.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "baton.v1.Admin"


def main() -> int:
    addr, token_file, method_name, request_json = sys.argv[1:5]
    with open(token_file, encoding="ascii") as f:
        token = f.read().strip()
    channel = grpc.insecure_channel(addr)

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    if status.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"health: {status.status}", file=sys.stderr)
        return 1

    reflection = ProtoReflectionDescriptorDatabase(channel)
    services = reflection.get_services()
    if SERVICE not in services:
        print(f"reflection lists {services}, not {SERVICE}", file=sys.stderr)
        return 1
    # Only what the listener serves: not baton.v1.Filter, which is in the same descriptors.
    foreign = [s for s in services if s not in (SERVICE, "grpc.health.v1.Health")
               and not s.startswith("grpc.reflection.")]
    if foreign:
        print(f"reflection lists services the admin API does not serve: {foreign}", file=sys.stderr)
        return 1
    pool = descriptor_pool.DescriptorPool(reflection)
    method = pool.FindServiceByName(SERVICE).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(request_json, request_class())

    call = channel.unary_unary(
        f"/{SERVICE}/{method_name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    try:
        response = call(request, metadata=[("authorization", f"Bearer {token}")], timeout=30)
    except grpc.RpcError as e:
        print(e.code().name, file=sys.stderr)
        return 2
    print(json.dumps(json_format.MessageToDict(response), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
