"""The gRPC test service and client of tests/tests/grpc.rs, on Python's grpcio.

    echo_service.py serve PORT [STATUS [CERT KEY]]
                                         serve Echo and grpc.health.v1 (health: SERVING or STATUS),
                                         over TLS with the PEM files CERT and KEY
    echo_service.py call TARGET SCENARIO call TARGET, print the outcome as one JSON line

The stubs are generated from echo.proto next to this file at start, into a temporary folder.
"""

import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))


def stubs():
    out = tempfile.mkdtemp(prefix="echo-stubs-")
    args = ["protoc", f"-I{HERE}", f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on echo.proto")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc


pb, rpc = stubs()


class Echo(rpc.EchoServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.cancelled = 0
        self.peers = set()

    def seen(self, context):
        with self.lock:
            self.peers.add(context.peer())

    def count_cancel(self):
        with self.lock:
            self.cancelled += 1

    def Unary(self, request, context):
        self.seen(context)
        echo = dict(context.invocation_metadata()).get("x-echo")
        if echo is not None:
            context.send_initial_metadata((("x-echoed", echo),))
        if request.delay_ms:
            end = time.monotonic() + request.delay_ms / 1000
            while time.monotonic() < end:
                if not context.is_active():
                    self.count_cancel()
                    return pb.Msg()
                time.sleep(0.01)
        if request.fail_code:
            code = next(c for c in grpc.StatusCode if c.value[0] == request.fail_code)
            context.abort(code, "failed on purpose")
        context.set_trailing_metadata((("x-trailer", "done"),))
        return pb.Msg(text=request.text)

    def Collect(self, request_iterator, context):
        self.seen(context)
        texts = [m.text for m in request_iterator]
        context.set_trailing_metadata((("x-trailer", "collected"),))
        return pb.Msg(text=",".join(texts), count=len(texts))

    def Expand(self, request, context):
        self.seen(context)
        for i in range(request.count):
            if not context.is_active():
                self.count_cancel()
                return
            yield pb.Msg(text=str(i))
            if request.delay_ms:
                time.sleep(request.delay_ms / 1000)
        if not context.is_active():
            self.count_cancel()

    def Chat(self, request_iterator, context):
        self.seen(context)
        for m in request_iterator:
            yield pb.Msg(text=m.text.upper())

    def Stats(self, request, context):
        with self.lock:
            return pb.Msg(count=self.cancelled, text=str(len(self.peers)))


def serve(port, status, tls):
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=300), maximum_concurrent_rpcs=None)
    rpc.add_EchoServicer_to_server(Echo(), server)
    checks = health.HealthServicer()
    checks.set("", getattr(health_pb2.HealthCheckResponse, status))
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if tls:
        cert, key = (open(path, "rb").read() for path in tls)
        bound = server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening {bound}", flush=True)
    server.wait_for_termination()


def code_of(error):
    return {"code": error.code().value[0], "message": error.details()}


def status_of(unary):
    """The code (and message) a unary call ends with."""
    try:
        unary()
        return {"code": 0}
    except grpc.RpcError as e:
        return code_of(e)


def call(target, scenario):
    channel = grpc.insecure_channel(target)
    stub = rpc.EchoStub(channel)
    try:
        if scenario == "unary":
            reply, call = stub.Unary.with_call(pb.Msg(text="hello"), metadata=(("x-echo", "abc"),), timeout=10)
            return {
                "text": reply.text,
                "initial": dict(call.initial_metadata()),
                "trailing": dict(call.trailing_metadata()),
                "code": call.code().value[0],
            }
        if scenario == "client_stream":
            reply, call = stub.Collect.with_call(iter([pb.Msg(text=t) for t in "abcde"]), timeout=10)
            return {"text": reply.text, "count": reply.count, "trailing": dict(call.trailing_metadata())}
        if scenario == "server_stream":
            return {"texts": [m.text for m in stub.Expand(pb.Msg(count=5), timeout=10)]}
        if scenario == "server_stream_is_not_buffered":
            # The first message arrives long before the last is sent.
            start = time.monotonic()
            stream = stub.Expand(pb.Msg(count=3, delay_ms=1000), timeout=10)
            first = next(stream)
            first_at = time.monotonic() - start
            rest = [m.text for m in stream]
            return {"first": first.text, "first_after_s": first_at, "rest": rest}
        if scenario == "bidi":
            # Each answer comes before the next message is sent: nothing waits for the end.
            import queue

            outbox = queue.Queue()

            def requests():
                while True:
                    item = outbox.get()
                    if item is None:
                        return
                    yield pb.Msg(text=item)

            stream = stub.Chat(requests(), timeout=10)
            got = []
            for word in ["one", "two", "three"]:
                outbox.put(word)
                got.append(next(stream).text)
            outbox.put(None)
            rest = list(stream)
            return {"texts": got, "rest": len(rest)}
        if scenario == "deadline":
            return status_of(lambda: stub.Unary(pb.Msg(text="slow", delay_ms=3000), timeout=0.3))
        if scenario == "cancel":
            stream = stub.Expand(pb.Msg(count=1000, delay_ms=50), timeout=30)
            got = [next(stream).text, next(stream).text]
            stream.cancel()
            # The server hears of it: its stream was reset through the gateway.
            end = time.monotonic() + 10
            while time.monotonic() < end:
                if stub.Stats(pb.Msg(), timeout=5).count >= 1:
                    return {"got": got, "server_saw_cancel": True}
                time.sleep(0.05)
            return {"got": got, "server_saw_cancel": False}
        if scenario == "fail":
            return status_of(lambda: stub.Unary(pb.Msg(text="x", fail_code=5), timeout=10))
        if scenario == "many":
            # 150 calls at once, each held 1 s by the server: more than one connection's streams.
            pool = futures.ThreadPoolExecutor(max_workers=150)
            calls = [pool.submit(stub.Unary, pb.Msg(text=str(i), delay_ms=1000), timeout=20) for i in range(150)]
            texts = sorted(int(c.result().text) for c in calls)
            return {"ok": texts == list(range(150))}
        if scenario == "sequential":
            for i in range(20):
                stub.Unary(pb.Msg(text=str(i)), timeout=10)
            return {"ok": True}
        if scenario == "unavailable":
            return status_of(lambda: stub.Unary(pb.Msg(text="x", fail_code=14), timeout=10))
        if scenario == "stats":
            s = stub.Stats(pb.Msg(), timeout=10)
            return {"cancelled": s.count, "peers": int(s.text)}
        if scenario == "health":
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            return {"status": reply.status}
        raise SystemExit(f"unknown scenario {scenario}")
    except grpc.RpcError as e:
        return {"error": code_of(e)}
    finally:
        channel.close()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "SERVING", sys.argv[4:6])
    elif len(sys.argv) == 4 and sys.argv[1] == "call":
        print(json.dumps(call(sys.argv[2], sys.argv[3])), flush=True)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
