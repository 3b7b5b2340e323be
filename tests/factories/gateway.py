"""The gateway served for tests, and its call records once written."""

import asyncio
import socket
import threading
import time

import uvicorn

from marketplace.gateway.app import Gateway
from marketplace.models import ModelCall
from marketplace.services.model_calls import model_calls_flush


class GatewayServer:
    """The gateway under uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.gateway = Gateway()
        config = uvicorn.Config(self.gateway, lifespan="on", log_level="warning", loop="asyncio", http="httptools")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def wait_settled(self) -> None:
        """Until every call is settled: the gateway settles a call just after its answer is sent."""
        deadline = time.monotonic() + 10
        while self.gateway.requests_in_flight and time.monotonic() < deadline:
            time.sleep(0.01)


def written_calls(gateway: GatewayServer) -> list[ModelCall]:
    """Every call's record, once the gateway settled them all."""
    gateway.wait_settled()
    model_calls_flush()
    return list(ModelCall.objects.order_by("pk"))
