"""Channels to the coordinator, with gRPC's own retry policy for dropped connections."""

from __future__ import annotations

import json
import os

import grpc

from frameproof.v1 import farm_pb2_grpc

ENV_COORDINATOR = "FRAMEPROOF_COORDINATOR"
DEFAULT_COORDINATOR = "127.0.0.1:50051"

# Retry only what is safe to retry: UNAVAILABLE means the call never reached the
# server's handler. Streams (uploads, downloads) resume on their own.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "frameproof.v1.JobService"},
                         {"service": "frameproof.v1.NodeService"},
                         {"service": "frameproof.v1.BlobStore"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def coordinator_address(explicit: str | None) -> str:
    return explicit or os.environ.get(ENV_COORDINATOR) or DEFAULT_COORDINATOR


def open_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


class FarmClient:
    """The three service stubs over one channel."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = open_channel(address)
        self.jobs = farm_pb2_grpc.JobServiceStub(self.channel)
        self.nodes = farm_pb2_grpc.NodeServiceStub(self.channel)
        self.blobs = farm_pb2_grpc.BlobStoreStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
