"""HeartbeatLeases, CompleteTasks and DeliverTasks over real gRPC: a real coordinator, signed
calls, real blob uploads. A batch is answered lease by lease, exactly as the single calls would
answer each lease alone; nothing in it is recorded or counted twice when it is sent again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from conftest import SAMPLE_SCENE
from farm_helpers import frames, submit_sample, wait_for

from frameproof.client import FarmClient
from frameproof.identity import load_or_create_keypair
from frameproof.localfarm import LocalFarm
from frameproof.receipts import sign_outputs, sign_receipt, verify_receipt
from frameproof.transfer import upload_files
from frameproof.v1 import farm_pb2 as pb


class Node:
    """A node's calls made by hand, so a test can send what a real node would not."""

    def __init__(self, farm: LocalFarm, name: str, work: Path) -> None:
        farm.bond_node(name)  # bonded, and `--proven-after 0`: unbounded work
        self.keypair = load_or_create_keypair(farm.root / name / "node-keypair.json")
        self.client = FarmClient(farm.address, self.keypair)
        self.id = str(self.keypair.pubkey())
        self.work = work
        self.client.nodes.RegisterNode(pb.RegisterNodeRequest(node_id=self.id, name=name),
                                       timeout=30)

    def lease(self, tasks: int, timeout: float = 30) -> list[pb.Lease]:
        # The coordinator answers 2 s before the deadline: a short one is a short poll.
        response = self.client.nodes.LeaseTask(
            pb.LeaseTaskRequest(node_id=self.id, max_tasks=tasks), timeout=timeout)
        return [response.lease, *response.more_leases] if response.HasField("lease") else []

    def result(self, lease: pb.Lease, *, upload: bool = True) -> pb.LeaseResult:
        """The lease's frames as "rendered" images (unique bytes), uploaded unless not."""
        outputs = []
        for frame in lease.frames:
            data = f"{self.id} {lease.lease_id} {frame}".encode()
            sha = hashlib.sha256(data).hexdigest()
            path = self.work / sha
            path.write_bytes(data)
            if upload:
                upload_files(self.client.blobs, {sha: path})
            outputs.append(pb.FrameOutput(
                frame=frame, image=pb.BlobRef(sha256=sha, size=len(data)), render_seconds=1.0,
                blender_version="test", device="CPU", log=f"frame {frame}",
                receipt_signature=sign_receipt(self.keypair, lease.job_id, frame, sha,
                                               lease.settings)))
        return pb.LeaseResult(lease_id=lease.lease_id, outputs=outputs)

    def sign_together(self, leases: list[pb.Lease], results: list[pb.LeaseResult],
                      keypair: object = None) -> None:
        """The results' receipts as one tree under one signature, as a node's DeliverTasks
        sends them (by this node's key unless another is given)."""
        by_lease = {lease.lease_id: lease for lease in leases}
        sign_outputs(keypair or self.keypair,  # type: ignore[arg-type]
                     [(by_lease[r.lease_id], o) for r in results for o in r.outputs])

    def images(self, *results: pb.LeaseResult) -> list[pb.BlobData]:
        """The results' images as DeliverTasks carries them (read back from `result`)."""
        return [pb.BlobData(blob=o.image, data=(self.work / o.image.sha256).read_bytes())
                for result in results for o in result.outputs]

    def deliver(self, results: list[pb.LeaseResult], images: list[pb.BlobData],
                max_tasks: int) -> pb.DeliverTasksResponse:
        response = self.client.nodes.DeliverTasks(pb.DeliverTasksRequest(
            node_id=self.id, images=images, results=results, max_tasks=max_tasks), timeout=30)
        assert [o.lease_id for o in response.results] == [r.lease_id for r in results]
        assert [i.blob.sha256 for i in response.images] == [i.blob.sha256 for i in images]
        return response

    def complete(self, *results: pb.LeaseResult) -> list[tuple[bool, str, str]]:
        response = self.client.nodes.CompleteTasks(
            pb.CompleteTasksRequest(node_id=self.id, results=results), timeout=30)
        assert [o.lease_id for o in response.results] == [r.lease_id for r in results]
        return [(o.accepted, o.code, o.reason) for o in response.results]

    def beat(self, *lease_ids: str) -> list[pb.LeaseRenewal]:
        response = self.client.nodes.HeartbeatLeases(
            pb.HeartbeatLeasesRequest(node_id=self.id, lease_ids=lease_ids), timeout=30)
        return list(response.leases)

    def leases_completed(self) -> int:
        return self.client.nodes.GetNodeStanding(
            pb.GetNodeStandingRequest(node_id=self.id), timeout=30).standing.leases_completed


@contextmanager
def farm_with_job(tmp_path: Path, frame_range: str, lease_seconds: float
                  ) -> Iterator[tuple[LocalFarm, pb.Job]]:
    """A coordinator whose proven nodes take unbounded work (no verifier: results stay
    delivered, unjudged) and the sample scene's `frame_range` queued on it."""
    with LocalFarm(tmp_path / "farm", lease_seconds=lease_seconds) as farm:
        farm.start_coordinator(extra_args=("--proven-after", "0", "--no-verifier"))
        with farm.client() as creator:
            job = submit_sample(creator, SAMPLE_SCENE, frame_range)
        yield farm, job


def test_a_batch_reports_each_lease_and_counts_nothing_twice(tmp_path: Path):
    with farm_with_job(tmp_path, "1-4", lease_seconds=4.0) as (farm, job):
        a = Node(farm, "a", tmp_path)
        b = Node(farm, "b", tmp_path)
        try:
            held = a.lease(4)
            assert [lease.frames[0] for lease in held] == [1, 2, 3, 4]
            good, late, unseen, last = held
            # `late` is not renewed: the coordinator takes it back and node b gets its task.
            taken: list[pb.Lease] = []

            def b_has_it() -> bool:
                renewals = a.beat(good.lease_id, unseen.lease_id, last.lease_id)
                assert all(r.keep_going for r in renewals), renewals
                taken.extend(b.lease(1, timeout=2.3))  # no long poll: a's beats go on
                return bool(taken)

            wait_for(b_has_it, timeout=60, interval=0.5)
            (foreign,) = taken
            assert foreign.task_id == late.task_id and foreign.lease_id != late.lease_id

            batch = [a.result(good), a.result(late), a.result(foreign),
                     a.result(unseen, upload=False), a.result(last)]
            first = a.complete(*batch)
            assert [(accepted, code) for accepted, code, _ in first] == [
                (True, ""), (False, "FAILED_PRECONDITION"), (False, "FAILED_PRECONDITION"),
                (False, "FAILED_PRECONDITION"), (True, "")]
            assert "unknown lease" in first[1][2]
            assert "another node" in first[2][2]
            assert "was not uploaded" in first[3][2]
            assert a.leases_completed() == 2

            assert a.complete(*batch) == first, "the same batch again: the same answers"
            assert a.leases_completed() == 2, "nothing counted twice"

            assert a.complete(a.result(unseen)) == [(True, "", "")], "uploaded now: accepted"
            assert a.leases_completed() == 3
            renewals = a.beat(good.lease_id, foreign.lease_id)
            assert [r.keep_going for r in renewals] == [False, False]
            assert "verifying" in renewals[0].reason and "another node" in renewals[1].reason

            # The single-lease form still works beside the batched one.
            single = b.result(foreign)
            assert b.client.nodes.CompleteTask(pb.CompleteTaskRequest(
                node_id=b.id, lease_id=foreign.lease_id, outputs=single.outputs),
                timeout=30).accepted
            try:
                b.client.nodes.CompleteTask(pb.CompleteTaskRequest(
                    node_id=b.id, lease_id=good.lease_id, outputs=single.outputs), timeout=30)
                raise AssertionError("a completion of another node's lease was accepted")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()

            with farm.client() as creator:
                listed = frames(creator, job.job_id)
                assert sorted(f.frame for f in listed) == [1, 2, 3, 4]
                assert all(f.state == pb.FRAME_STATE_VERIFYING for f in listed), listed
                log = creator.jobs.GetFrameLog(pb.FrameLogRequest(job_id=job.job_id, frame=1),
                                               timeout=30)
                assert "frame 1" in log.text
        finally:
            a.client.close()
            b.client.close()


def test_deliver_tasks_stores_images_records_results_and_leases_the_next_in_one_call(
        tmp_path: Path):
    with farm_with_job(tmp_path, "1-5", lease_seconds=60.0) as (farm, job):
        a = Node(farm, "a", tmp_path)
        try:
            first, second, spoiled = a.lease(3)
            results = [a.result(lease, upload=False) for lease in (first, second, spoiled)]
            images = a.images(*results)
            images[2].data = b"x" * len(images[2].data)  # not the bytes its sha256 names
            answer = a.deliver(results, images, max_tasks=2)
            assert [i.code for i in answer.images] == [0, 0, grpc.StatusCode.DATA_LOSS.value[0]]
            assert [(o.accepted, o.code) for o in answer.results] == [
                (True, ""), (True, ""), (False, "FAILED_PRECONDITION")]
            assert "was not uploaded" in answer.results[2].reason
            nxt = [answer.next.lease, *answer.next.more_leases]
            assert [lease.frames[0] for lease in nxt] == [4, 5], "the next tasks, same call"
            assert a.leases_completed() == 2

            # Sent again (a lost answer): the same outcomes, nothing recorded twice, and the
            # images already stored are the node's (its bytes prove it).
            again = a.deliver(results[:2], images[:2], max_tasks=0)
            assert [(o.accepted, o.code) for o in again.results] == [(True, ""), (True, "")]
            assert [i.code for i in again.images] == [0, 0]
            assert not again.HasField("next"), "max_tasks 0 leases nothing"
            assert a.leases_completed() == 2

            # The spoiled lease with its real image, the leased ones without any: no more work.
            rest = [a.result(lease, upload=False) for lease in nxt]
            done = a.deliver([results[2], *rest], a.images(results[2], *rest), max_tasks=4)
            assert all(o.accepted for o in done.results), done.results
            assert done.HasField("next") and not done.next.HasField("lease")
            assert a.leases_completed() == 5
            with farm.client() as creator:
                listed = frames(creator, job.job_id)
            assert sorted(f.frame for f in listed) == [1, 2, 3, 4, 5]
            assert all(f.state == pb.FRAME_STATE_VERIFYING for f in listed), listed

            # Another node's lease, and a result naming an image it never sent: refused alone.
            b = Node(farm, "b", tmp_path)
            try:
                refused = b.deliver([a.result(first, upload=False)], [], max_tasks=0)
                assert [(o.accepted, o.code) for o in refused.results] == [
                    (False, "FAILED_PRECONDITION")]
            finally:
                b.client.close()
        finally:
            a.client.close()


def test_a_delivery_signed_as_one_tree_is_checked_frame_by_frame(tmp_path: Path):
    with farm_with_job(tmp_path, "1-6", lease_seconds=60.0) as (farm, job):
        a = Node(farm, "a", tmp_path)
        try:
            leases = a.lease(6)
            assert len(leases) == 6
            # Signed by another key: every lease refused, nothing recorded.
            forged = [a.result(lease, upload=False) for lease in leases[:2]]
            a.sign_together(leases, forged, load_or_create_keypair(tmp_path / "intruder.json"))
            answer = a.deliver(forged, a.images(*forged), max_tasks=0)
            assert [(o.accepted, o.code) for o in answer.results] == [
                (False, "INVALID_ARGUMENT")] * 2
            assert all("receipt signature does not verify" in o.reason for o in answer.results)
            assert a.leases_completed() == 0

            # Its own tree, one proof spoiled: that lease alone is refused.
            results = [a.result(lease, upload=False) for lease in leases[:4]]
            a.sign_together(leases, results)
            proof = results[1].outputs[0].receipt_proof
            assert len({o.receipt_signature for r in results for o in r.outputs}) == 1
            results[1].outputs[0].receipt_proof = ("r" if proof[0] == "l" else "l") + proof[1:]
            answer = a.deliver(results, a.images(*results), max_tasks=0)
            assert [o.accepted for o in answer.results] == [True, False, True, True]
            assert "receipt signature does not verify" in answer.results[1].reason
            assert a.leases_completed() == 3

            with farm.client() as creator:
                kept = [f for f in frames(creator, job.job_id) if f.receipt_signature]
            assert sorted(f.frame for f in kept) == sorted(
                lease.frames[0] for lease in (leases[0], leases[2], leases[3]))
            for frame in kept:  # anyone can check each frame alone, with its proof
                assert frame.receipt_proof, "signed in a tree"
                assert verify_receipt(a.id, frame.receipt_signature, job.job_id, frame.frame,
                                      frame.image.sha256, job.settings, frame.receipt_proof)
                assert not verify_receipt(a.id, frame.receipt_signature, job.job_id,
                                          frame.frame + 1, frame.image.sha256, job.settings,
                                          frame.receipt_proof)
        finally:
            a.client.close()
