"""/metrics on the coordinator and on a render node, scraped while a real job renders."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from farm_helpers import submit_sample, wait_for, wait_until_done
from prometheus_client.parser import text_string_to_metric_families

from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from frameproof.v1 import farm_pb2_grpc
from frameproof.wallet import sign_deposit

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "spinning_cube.blend"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_names(url: str) -> set[str]:
    """The metric names a /metrics page declares (its # TYPE lines)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return set(re.findall(r"^# TYPE (\S+) ", response.read().decode(), re.M))


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _http_address(farm: LocalFarm) -> str:
    assert farm.coordinator is not None and farm.coordinator.stdout is not None
    line = farm.coordinator.stdout.readline().decode()
    assert line.startswith("http on "), line
    return line.split()[-1]


def _node_metrics_url(farm: LocalFarm, name: str) -> str:
    def announced() -> str | None:
        log = (farm.root / "logs" / f"{name}.log").read_text()
        found = re.search(r"metrics on (http://\S+/metrics)", log)
        return found.group(1) if found else None

    return wait_for(announced, 60)


def test_metrics_move_during_a_job(tmp_path: Path) -> None:
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as farm:
        farm.start_coordinator(extra_args=("--http", "127.0.0.1:0"))
        coordinator_url = f"http://{_http_address(farm)}/metrics"
        before = scrape(coordinator_url)
        assert value(before, "frameproof_leases") == 0

        with farm.client() as client:
            # Submitted before any node exists: the frames wait in the queue at tier 3.
            job = submit_sample(client, SAMPLE, "1-3", tier=3)
            queued = scrape(coordinator_url)
            assert value(queued, "frameproof_queue_frames", tier="3") == 3
            assert value(queued, "frameproof_frames", state="queued") == 3
            assert value(queued, "frameproof_rpc_calls_total", method="JobService/SubmitJob",
                         code="OK") == 1
            assert value(queued, "frameproof_rpc_duration_seconds_count",
                         method="JobService/SubmitJob") == 1

            farm.start_node("n1", extra_args=("--metrics", "127.0.0.1:0"))
            node_url = _node_metrics_url(farm, "n1")
            assert value(scrape(node_url), "frameproof_node_frames_rendered_total") == 0
            wait_until_done(client, job.job_id)

            node = scrape(node_url)
            assert value(node, "frameproof_node_frames_rendered_total") == 3
            assert value(node, "frameproof_node_render_seconds_count") == 3
            assert value(node, "frameproof_node_render_seconds_sum") > 0
            assert value(node, "frameproof_node_leases_total", outcome="delivered") >= 1
            assert value(node, "frameproof_node_leases_total", outcome="failed") == 0

            def settled() -> dict | None:
                now = scrape(coordinator_url)
                return now if value(now, "frameproof_frames_charged_total") == 3 else None

            after = wait_for(settled, 60)
            assert value(after, "frameproof_queue_frames", tier="3") == 0
            assert value(after, "frameproof_frames", state="done") == 3
            assert value(after, "frameproof_leases") == 0
            assert value(after, "frameproof_nodes_online") == 1
            assert value(after, "frameproof_tokens_burned_total") > 0
            assert value(after, "frameproof_charged_usd_total") > 0
            assert value(after, "frameproof_rpc_calls_total", method="NodeService/CompleteTask",
                         code="OK") >= 1
            verdicts = (value(after, "frameproof_verification_verdicts_total", verdict="passed")
                        + value(after, "frameproof_verification_verdicts_total",
                                verdict="failed"))
            assert verdicts == value(after, "frameproof_verifications", state="done")
            assert value(after, "frameproof_chain_ops", kind="burn", state="landed") >= 1

            # A deposit signed for less than the job claims is refused by the chain layer:
            # counted as a chain error.
            prepared = client.jobs.PrepareDeposit(pb.PrepareDepositRequest(amount_usd=0.01),
                                                  timeout=30)
            signed = sign_deposit(prepared.message, load_or_create_keypair(farm.creator_keypair))
            with pytest.raises(grpc.RpcError) as refused_deposit:
                client.jobs.SubmitJob(pb.SubmitJobRequest(
                    scene_id=job.scene_id, frames="1", tier=3, max_cost_usd=0.5,
                    signed_deposit=signed), timeout=30)
            assert "does not match" in (refused_deposit.value.details() or "")
            errors = scrape(coordinator_url)
            assert value(errors, "frameproof_chain_errors_total",
                         operation="prepare_signed_deposit") == 1

        # An unsigned call is refused, and counted with its status code.
        with grpc.insecure_channel(farm.address) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                farm_pb2_grpc.JobServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Counted when the server has finished the call, which the client may see first.
        def refusal_counted() -> dict | None:
            now = scrape(coordinator_url)
            return now if value(now, "frameproof_rpc_calls_total", method="JobService/ListJobs",
                                code="UNAUTHENTICATED") >= 1 else None

        last = wait_for(refusal_counted, 10)
        assert value(last, "frameproof_rpc_calls_total", method="JobService/ListJobs",
                     code="UNAUTHENTICATED") == 1

        # Every series the Grafana dashboard charts exists on one of the two endpoints.
        declared = metric_names(coordinator_url) | metric_names(node_url)
        dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text()
        charted = {re.sub(r"_(bucket|sum|count)$", "", name)
                   for name in re.findall(r"\b(frameproof_\w+)", dashboard)}
        assert charted and charted <= declared, charted - declared


def test_coordinator_refuses_a_busy_http_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with LocalFarm(tmp_path / "farm") as farm, pytest.raises(RuntimeError):
            farm.start_coordinator(extra_args=("--http", f"127.0.0.1:{port}"))
        log = (tmp_path / "farm" / "logs" / "coordinator.log").read_text()
        assert f"cannot serve HTTP on 127.0.0.1:{port}" in log
