"""The floor under a coordinator call: server CPU per unary call of a bare grpc.aio server.

An echo method (bytes in, the same bytes out, no interceptor, no storage) in a server
process pinned to CPU 0, 64 concurrent callers in a client process pinned to CPU 1 over
`--channels` connections; the server's CPU time (user + system, from /proc) over the run
divided by the calls answered. `--uvloop` runs both sides on uvloop (needs `pip install
uvloop`, which the project does not depend on).

    .venv/bin/python -m bench.grpc_echo_bench --channels 64 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

from bench.cycle_bench import cpu_seconds

CALLERS = 64


def _run(main: Coroutine[Any, Any, None], uvloop: bool) -> None:
    if uvloop:
        __import__("uvloop").run(main)
    else:
        asyncio.run(main)


async def _serve() -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def _call(port: str, seconds: float, channels: int) -> None:
    import grpc

    calls = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.use_local_subchannel_pool", 1)]).unary_unary("/bench.Echo/Echo")
        for _ in range(channels)]
    end = time.monotonic() + seconds
    done = 0

    async def caller(index: int) -> None:
        nonlocal done
        call = calls[index % channels]
        while time.monotonic() < end:
            await call(b"x" * 200)
            done += 1

    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    print(done, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=64, help="client connections")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        _run(_serve(), args.uvloop)
        return
    if args.role == "client":
        _run(_call(args.port, args.seconds, args.channels), args.uvloop)
        return
    flags = ["--uvloop"] if args.uvloop else []
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "bench.grpc_echo_bench",
                               "--role", "server", *flags], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            ["taskset", "-c", "1", sys.executable, "-m", "bench.grpc_echo_bench", "--role",
             "client", "--port", port, "--seconds", str(args.seconds), "--channels",
             str(args.channels), *flags], capture_output=True, text=True, check=True).stdout
        calls = int(out.split()[-1])
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.kill()
    print(f"{calls / args.seconds:.0f} calls/s, server CPU {cpu / calls * 1e6:.0f} µs a call "
          f"({args.channels} channels{', uvloop' if args.uvloop else ''})")


if __name__ == "__main__":
    main()
