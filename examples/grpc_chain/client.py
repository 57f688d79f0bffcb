"""A client of the grpc_chain example that is not ours: Python's grpcio.

Calls A's `/chain.Hop/Call` twice: once with `timeout=0.3` (grpcio sends
its own `grpc-timeout`), once cancelled with `call.cancel()` while C works.
The messages are encoded by hand (two fields of protobuf), so no generated
code and no protoc are needed. Usage: client.py HOST:PORT
"""

import sys
import time

import grpc


def varint(n):
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def work(scenario, work_ms):
    """`Work { scenario = 1: string, work_ms = 2: uint64 }`."""
    name = scenario.encode()
    return b"\x0a" + varint(len(name)) + name + b"\x10" + varint(work_ms)


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    hop = channel.unary_unary(
        "/chain.Hop/Call",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    try:
        hop(work("deadline", 5000), timeout=0.3)
        print("python: the 0.3 s call succeeded, which it must not")
        return 1
    except grpc.RpcError as error:
        # Our own timer says DEADLINE_EXCEEDED; tonic's server answers the
        # same deadline with CANCELLED, "Timeout expired", and now and then
        # that answer arrives first. Either is the deadline; anything else
        # is not.
        code, details = error.code(), error.details() or ""
        print(f"python: timeout=0.3 -> {code.name} ({details})")
        tonic_deadline = code == grpc.StatusCode.CANCELLED and "Timeout expired" in details
        if code != grpc.StatusCode.DEADLINE_EXCEEDED and not tonic_deadline:
            return 1
    call = hop.future(work("cancel", 10000))
    time.sleep(0.3)  # C is working by now
    call.cancel()
    print(f"python: call.cancel() -> cancelled={call.cancelled()}")
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
