"""A node leasing several tasks per call (`render-node run --max-tasks`): real coordinator,
real node processes, real Blender renders. Every frame is rendered once, the waiting leases
stay alive while the first renders, and a stopped node gives back what it did not start."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for, wait_until_done, wait_until_registered
from prometheus_client.parser import text_string_to_metric_families

from frameproof.localfarm import LocalFarm
from frameproof.receipts import verify_receipt
from frameproof.v1 import farm_pb2 as pb
from render_node.daemon import STOPPING_REASON

RENDERED = re.compile(r"frame (\d+) rendered in")


def rendered(farm: LocalFarm, *names: str) -> list[int]:
    """Every frame the named nodes rendered, in the order their logs say."""
    found: list[int] = []
    for name in names:
        found += [int(n) for n in RENDERED.findall(log_of(farm, name))]
    return found


def log_of(farm: LocalFarm, name: str) -> str:
    path = farm.root / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def calls(address: str, method: str) -> float:
    """Calls the coordinator answered OK, by method (its /metrics)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "frameproof_rpc_calls_total"
               and sample.labels.get("method") == f"NodeService/{method}"
               and sample.labels.get("code") == "OK")


def http_address(farm: LocalFarm) -> str:
    assert farm.coordinator is not None and farm.coordinator.stdout is not None
    line = farm.coordinator.stdout.readline().decode()
    assert line.startswith("http on "), line
    return line.split()[-1]


def test_a_node_takes_several_leases_per_call_and_renders_each_frame_once(farm: LocalFarm):
    # A bonded node with a verified record (proven after 0 frames) takes unbounded work;
    # a new identity gets one lease at a time.
    farm.start_coordinator(extra_args=("--proven-after", "0", "--http", "127.0.0.1:0"))
    http = http_address(farm)
    with farm.client() as client:
        job = submit_sample(client, SAMPLE_SCENE, "1-6")  # queued before the node asks
        farm.start_node("batcher", extra_args=("--max-tasks", "3"))
        wait_until_registered(farm, ["batcher"])
        done = wait_until_done(client, job.job_id)
        final = frames(client, job.job_id)

    assert done.state == pb.JOB_STATE_DONE
    assert "leased 3 tasks in one call" in log_of(farm, "batcher")
    assert [f.frame for f in final] == [1, 2, 3, 4, 5, 6]
    assert all(f.state == pb.FRAME_STATE_DONE and f.attempts == 0 for f in final)
    assert sorted(rendered(farm, "batcher")) == [1, 2, 3, 4, 5, 6], "each frame once"
    # Its leases were delivered together with their images: DeliverTasks, several leases
    # a call, no separate uploads or completions.
    assert "delivered 3 leases in one call" in log_of(farm, "batcher")
    assert calls(http, "CompleteTask") == 0 and calls(http, "CompleteTasks") == 0
    assert 2 <= calls(http, "DeliverTasks") < 6
    # Each call's frames under one receipt signature (a tree), each kept with its proof.
    assert any(f.receipt_proof for f in final)
    assert len({f.receipt_signature for f in final}) < len(final)
    assert all(verify_receipt(f.node_id, f.receipt_signature, job.job_id, f.frame,
                              f.image.sha256, job.settings, f.receipt_proof) for f in final)


def test_a_stopped_node_gives_back_the_leases_it_did_not_start(tmp_path: Path):
    with LocalFarm(tmp_path / "farm", lease_seconds=1.5) as farm:
        stop_a_node_holding_four_leases(farm)


def stop_a_node_holding_four_leases(farm: LocalFarm) -> None:
    # A bonded node with a verified record (proven after 0 frames) takes unbounded work;
    # a new identity gets one lease at a time.
    farm.start_coordinator(extra_args=("--proven-after", "0", "--http", "127.0.0.1:0"))
    http = http_address(farm)
    with farm.client() as client:
        # Frames of about 2 s, longer than this farm's 1.5 s lease: the leases waiting
        # behind the first live only through their heartbeats.
        job = submit_sample(client, SAMPLE_SCENE, "1-4", samples=512,
                            resolution_percentage=50)
        quitter = farm.start_node("quitter", extra_args=("--max-tasks", "4"))
        wait_for(lambda: "leased 4 tasks in one call" in log_of(farm, "quitter"), timeout=60)
        wait_for(lambda: " frames [" in log_of(farm, "quitter"), timeout=60)
        quitter.send_signal(signal.SIGTERM)  # mid-render: it finishes that lease, no more
        assert quitter.wait(timeout=120) == 0
        after_stop = frames(client, job.job_id)

        farm.start_node("finisher")
        done = wait_until_done(client, job.job_id, timeout=240)
        final = frames(client, job.job_id)

    log = log_of(farm, "quitter")
    assert len(rendered(farm, "quitter")) == 1, "the lease it had started, and only that"
    assert log.count("given back (not started)") == 3
    back = [f for f in after_stop if f.state == pb.FRAME_STATE_QUEUED]
    assert len(back) == 3, [(f.frame, f.state, f.error) for f in after_stop]
    # Given back, not expired: the waiting leases were kept alive until the stop.
    assert all(f.error == STOPPING_REASON for f in back)
    assert done.state == pb.JOB_STATE_DONE
    assert all(f.state == pb.FRAME_STATE_DONE for f in final)
    assert sorted(rendered(farm, "quitter", "finisher")) == [1, 2, 3, 4], "nothing twice"
    assert calls(http, "HeartbeatLeases") > 0, "the waiting leases were renewed together"
