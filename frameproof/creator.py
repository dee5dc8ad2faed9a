"""The creator library: what a creator does with the farm, as typed calls.

The `frameproof` CLI and the Blender add-on are thin layers over this module. It prints
nothing, never exits the process and reports progress through callbacks; every failure a
creator can meet is a `CreatorError` subclass whose message is one line meant for a person.
It needs neither Blender nor an image stack: BAT packs the scene, gRPC talks to the
coordinator (the creator's install has only these).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from solders.keypair import Keypair

from frameproof.client import DEFAULT_RETRIES, FarmClient, Retries
from frameproof.frames import FrameSpecError, format_frames, parse_frames
from frameproof.output_names import frame_output_path, uses_fallback
from frameproof.packing import PackingError, pack_scene
from frameproof.preview import MAX_FPS, EncodeFailed, EncoderMissing, encode_mp4, find_encoder
from frameproof.transfer import TransferError, download_blob, upload_files
from frameproof.v1 import farm_pb2 as pb
from frameproof.wallet import DepositError, sign_deposit

FORMATS = {"png": pb.OUTPUT_FORMAT_PNG, "exr": pb.OUTPUT_FORMAT_EXR}
MAX_JOB_NAME = 200  # the coordinator's limit on a job's name
TIERS = (1, 2, 3)  # 1: trusted nodes only, 2: priority, 3: economy
MAX_TOPUP_USD = 1_000_000.0  # the coordinator's cap on one deposit
ENDED_STATES = frozenset({pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
# Estimating renders probe frames on the coordinator; submitting waits for the chain.
ESTIMATE_TIMEOUT_S = 300.0
SUBMIT_TIMEOUT_S = 300.0
CALL_TIMEOUT_S = 30.0

TransferProgress = Callable[[int, int], None]  # (bytes so far, bytes in all)
FrameProgress = Callable[[int, int], None]  # (frames so far, frames in all)


class CreatorError(Exception):
    """Anything a creator's request can fail with; the message is one line for a person."""


class InvalidRequest(CreatorError):
    """The request itself is wrong (a bad frame range, a negative cost): fix it and retry."""


class SceneError(CreatorError):
    """The scene cannot be packed: not a .blend, unreadable, or dependencies missing."""


class CoordinatorUnavailable(CreatorError):
    """The coordinator cannot be reached (not running, wrong address, network down)."""

    def __init__(self, address: str, details: str) -> None:
        super().__init__(f"cannot reach the coordinator at {address} ({details})")
        self.address = address


class CoordinatorRefused(CreatorError):
    """The coordinator answered with an error: `code` is the gRPC status name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{details} ({code})")
        self.code = code
        self.details = details


class JobNotFound(CoordinatorRefused):
    """No such job, or not one of this creator's."""


class DepositRefused(CreatorError):
    """The escrow deposit the coordinator prepared is not one this wallet should sign."""


class TransferFailed(CreatorError):
    """An upload or download gave up after its retries."""


class PreviewUnavailable(InvalidRequest):
    """No encoder for the MP4 preview on this machine: the message says what to install."""


class PreviewFailed(CreatorError):
    """The encoder ran and could not make the preview (its own last line says why)."""


@dataclass(frozen=True)
class JobOptions:
    """What a job renders and how it is paid; zero or "" means "the scene's own"."""

    frames: str = ""  # "1-250" or "1,5,10-20"; "" = the scene's frame range
    chunk: int = 1  # frames per task
    tier: int = 3
    max_cost_usd: float = 0.0  # escrowed at submit; 0 = the top of the estimate's range
    name: str = ""
    engine: str = ""
    samples: int = 0
    resolution_x: int = 0
    resolution_y: int = 0
    resolution_percentage: int = 0
    output_format: str = "png"
    seed: int | None = None  # Cycles seed; None: the scene's own, as saved

    def validate(self) -> None:
        """Refuse what the coordinator would refuse, before anything is packed or sent."""
        if self.frames.strip():
            try:
                parse_frames(self.frames)
            except FrameSpecError as error:
                raise InvalidRequest(f"frames: {error}") from None
        if self.chunk < 1:
            raise InvalidRequest("chunk must be at least 1 frame per task")
        if self.tier not in TIERS:
            raise InvalidRequest(f"tier must be 1, 2 or 3, not {self.tier}")
        if not math.isfinite(self.max_cost_usd) or self.max_cost_usd < 0:
            raise InvalidRequest("max cost must be positive (0: the top of the estimate)")
        if self.samples < 0:
            raise InvalidRequest("samples must be positive (0: the scene's)")
        if self.resolution_x < 0 or self.resolution_y < 0:
            raise InvalidRequest("resolution must be positive (0: the scene's)")
        if self.resolution_percentage < 0:
            raise InvalidRequest("resolution percentage must be positive (0: the scene's)")
        if self.output_format not in FORMATS:
            raise InvalidRequest(f"output format must be one of {', '.join(sorted(FORMATS))}")
        if self.seed is not None and self.seed < 0:
            raise InvalidRequest("seed must be 0 or more (or absent: the scene's own)")

    def settings(self) -> pb.RenderSettings:
        settings = pb.RenderSettings(
            engine=self.engine.upper(),
            samples=self.samples,
            resolution_x=self.resolution_x,
            resolution_y=self.resolution_y,
            resolution_percentage=self.resolution_percentage,
            output_format=FORMATS[self.output_format],
        )
        if self.seed is not None:  # only an explicit override; absent renders the scene's
            settings.seed = self.seed
        return settings


@dataclass(frozen=True)
class UploadedScene:
    """A packed scene the coordinator now holds, by the sha256 of its manifest."""

    scene_id: str
    files: int
    sent_bytes: int  # 0 when the coordinator already had everything from this creator
    missing: tuple[str, ...] = ()  # dependencies BAT could not find (only if allowed)
    phases: tuple[pb.JobPhase, ...] = ()  # pack and upload, timed here (the job's timeline)


@dataclass(frozen=True)
class Submission:
    job: pb.Job
    estimate: pb.Estimate
    max_cost_usd: float  # what was escrowed


@dataclass(frozen=True)
class Download:
    files: list[Path] = field(default_factory=list)
    not_ready: int = 0  # frames not rendered (yet): downloading again later fetches them
    output_path: str = ""  # the scene's output path the names follow ("": none, the fallback)

    @property
    def fallback_names(self) -> bool:
        """True when the scene names no output file, so frames are frame_NNNNNN.ext."""
        return uses_fallback(self.output_path)


@dataclass(frozen=True)
class Requeued:
    """Frames queued again: in the job itself, or (once it had settled) in a new job."""

    job: pb.Job  # the job the frames now render in
    frames: list[int]
    follow_up_of: str = ""  # the settled job, when `job` is a new job for its frames
    submission: Submission | None = None  # the new job's estimate and escrow

    @property
    def new_job(self) -> bool:
        return bool(self.follow_up_of)


def follow_up_options(job: pb.Job, frames: list[int], *, max_cost_usd: float = 0.0
                      ) -> JobOptions:
    """A new job for `frames` of `job`, rendering exactly as it did: its scene's settings with
    the same overrides, tier and chunk (a setting the creator left to the scene is its
    effective value, which renders the same)."""
    settings = job.settings
    name = f"{job.name} (requeue of {job.job_id[:8]})"
    return JobOptions(
        frames=format_frames(frames), chunk=max(1, job.chunk_size), tier=job.tier or 3,
        max_cost_usd=max_cost_usd, name=name[-MAX_JOB_NAME:], engine=settings.engine,
        samples=settings.samples, resolution_x=settings.resolution_x,
        resolution_y=settings.resolution_y,
        resolution_percentage=settings.resolution_percentage,
        output_format="exr" if settings.output_format == pb.OUTPUT_FORMAT_EXR else "png",
        seed=settings.seed if settings.HasField("seed") else None)


@dataclass(frozen=True)
class Preview:
    path: Path  # the MP4
    frames: int  # approved frames in it
    not_ready: int  # frames not approved (yet): a later preview includes them


def frame_file_name(frame: pb.Frame, output_path: str = "") -> Path:
    """Where a frame is saved under the download folder: the scene's output path as Blender
    names it (`//render/shot_####` → render/shot_0001.png), or frame_000001.png when the
    scene names no file (frameproof/output_names.py)."""
    return Path(frame_output_path(output_path, frame.frame, frame.extension or "png"))


def job_ended(job: pb.Job) -> bool:
    return job.state in ENDED_STATES


@contextlib.contextmanager
def _rpc(address: str, job_id: str = "") -> Iterator[None]:
    """Turn the coordinator's gRPC errors into this module's exceptions."""
    try:
        yield
    except grpc.RpcError as error:
        raise rpc_error(error, address, job_id) from None


def rpc_error(error: grpc.RpcError, address: str, job_id: str = "") -> CreatorError:
    """The CreatorError for a failed call (exported for callers that use the stubs too)."""
    code = error.code()
    details = error.details() or code.name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return CoordinatorUnavailable(address, f"{code.name}: {details}")
    if code == grpc.StatusCode.NOT_FOUND and job_id:
        return JobNotFound(code.name, details)
    return CoordinatorRefused(code.name, details)


def _transfer_error(error: TransferError, address: str, job_id: str = "") -> CreatorError:
    """A transfer that gave up because of the coordinator says so; others are TransferFailed."""
    if isinstance(error.__cause__, grpc.RpcError):
        failure = rpc_error(error.__cause__, address, job_id)
        if isinstance(failure, CoordinatorUnavailable):
            return failure
    return TransferFailed(str(error))


class Creator:
    """One creator's session with one coordinator, signed with the creator's keypair."""

    def __init__(self, client: FarmClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, address: str, keypair: Keypair, *, tls_ca: Path | None = None,
                retries: Retries = DEFAULT_RETRIES) -> Creator:
        """Open a signed channel; nothing is sent until the first call. `retries`: how long
        a call keeps trying a coordinator that does not answer before it is unavailable."""
        if not address.strip():
            raise InvalidRequest("the coordinator address is empty; give HOST:PORT")
        return cls(FarmClient(address.strip(), keypair, tls_ca=tls_ca, retries=retries))

    @property
    def address(self) -> str:
        return self.client.address

    @property
    def pubkey(self) -> str:
        return self.client.pubkey

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Creator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scenes and jobs -----------------------------------------------------------------

    def upload_scene(
        self,
        scene: Path,
        *,
        on_progress: TransferProgress | None = None,
        on_packing: Callable[[str], None] | None = None,
        allow_missing: bool = False,
    ) -> UploadedScene:
        """Pack the scene with BAT and upload only what the coordinator lacks from this key.

        Missing dependencies refuse the upload unless allow_missing: a scene rendering
        without its textures costs money and looks wrong.
        """
        with tempfile.TemporaryDirectory(prefix="frameproof-pack-") as work:
            pack_start = time.time()
            try:
                packed = pack_scene(Path(scene), Path(work), on_progress=on_packing)
            except PackingError as error:
                raise SceneError(f"cannot pack {scene}: {error}") from None
            if packed.missing and not allow_missing:
                raise SceneError(f"{scene}: missing dependencies: "
                                 f"{', '.join(packed.missing[:10])}")
            manifest_file = Path(work) / "scene-manifest.json"
            manifest_file.write_bytes(packed.manifest.to_bytes())
            files = {**packed.files, packed.manifest.scene_id: manifest_file}
            upload_start = time.time()
            with _rpc(self.address):
                try:
                    sent = upload_files(self.client.blobs, files, on_progress=on_progress)
                except TransferError as error:
                    raise _transfer_error(error, self.address) from None
            uploaded = time.time()
        return UploadedScene(packed.manifest.scene_id, len(files), sent, tuple(packed.missing),
                             (_phase("pack", pack_start, upload_start),
                              _phase("upload", upload_start, uploaded)))

    def estimate(self, scene_id: str, options: JobOptions) -> pb.Estimate:
        """The coordinator's measured estimate (it renders probe frames) and its range."""
        options.validate()
        with _rpc(self.address):
            return self.client.jobs.EstimateJob(pb.EstimateRequest(
                scene_id=scene_id, frames=options.frames, settings=options.settings(),
                tier=options.tier), timeout=ESTIMATE_TIMEOUT_S)

    def submit(
        self,
        scene_id: str,
        options: JobOptions,
        *,
        estimate: pb.Estimate | None = None,
        on_estimate: Callable[[pb.Estimate, float], None] | None = None,
        phases: Iterable[pb.JobPhase] = (),
    ) -> Submission:
        """Escrow the maximum cost (signed here, by this wallet) and start the job.

        The escrow is options.max_cost_usd, or the top of the estimate's range; on_estimate
        sees the estimate and that amount before anything is signed.
        """
        options.validate()
        phases = list(phases)
        if estimate is None:
            asked = time.time()
            estimate = self.estimate(scene_id, options)
            phases.append(_phase("estimate", asked, time.time()))
        max_cost = options.max_cost_usd or estimate.max_cost_usd
        if on_estimate is not None:
            on_estimate(estimate, max_cost)
        with _rpc(self.address):
            deposit = self.client.jobs.PrepareDeposit(
                pb.PrepareDepositRequest(amount_usd=max_cost), timeout=60)
            try:
                signed = sign_deposit(deposit.message, self.client.keypair)
            except DepositError as error:
                raise DepositRefused(str(error)) from None
            response = self.client.jobs.SubmitJob(pb.SubmitJobRequest(
                scene_id=scene_id, frames=options.frames, chunk_size=options.chunk,
                settings=options.settings(), name=options.name, tier=options.tier,
                max_cost_usd=max_cost, signed_deposit=signed, creator_phases=phases),
                timeout=SUBMIT_TIMEOUT_S)
        return Submission(response.job, estimate, max_cost)

    def submit_scene(
        self,
        scene: Path,
        options: JobOptions,
        *,
        on_progress: TransferProgress | None = None,
        on_estimate: Callable[[pb.Estimate, float], None] | None = None,
    ) -> tuple[Submission, UploadedScene]:
        """Validate, pack, upload, estimate, escrow and submit in one call."""
        options.validate()
        if not options.name:
            options = replace(options, name=Path(scene).stem)
        uploaded = self.upload_scene(scene, on_progress=on_progress)
        return self.submit(uploaded.scene_id, options, on_estimate=on_estimate,
                           phases=uploaded.phases), uploaded

    def job(self, job_id: str) -> pb.Job:
        """The job's state and frame counts now (with why frames wait for verification)."""
        with _rpc(self.address, job_id):
            return self.client.jobs.GetJob(pb.GetJobRequest(job_id=job_id),
                                           timeout=CALL_TIMEOUT_S)

    def timeline(self, job_id: str) -> pb.JobTimeline:
        """Where the job's wall time went, phase by phase (coordinator/domain/timeline.py)."""
        with _rpc(self.address, job_id):
            return self.client.jobs.GetJobTimeline(pb.GetJobRequest(job_id=job_id),
                                                   timeout=CALL_TIMEOUT_S)

    def jobs(self, limit: int = 20) -> pb.ListJobsResponse:
        """This creator's newest jobs."""
        with _rpc(self.address):
            return self.client.jobs.ListJobs(pb.ListJobsRequest(limit=limit),
                                             timeout=CALL_TIMEOUT_S)

    def watch(
        self,
        job_id: str,
        *,
        on_update: Callable[[pb.Job], None] | None = None,
        on_away: Callable[[], None] | None = None,
        reconnect_after_s: float = 1.0,
    ) -> pb.Job:
        """Follow the job's stream until it ends; reconnect while the coordinator is away."""
        while True:
            try:
                for job in self.client.jobs.WatchJob(pb.GetJobRequest(job_id=job_id),
                                                     wait_for_ready=True):
                    if on_update is not None:
                        on_update(job)
                    if job_ended(job):
                        return job
            except grpc.RpcError as error:
                failure = rpc_error(error, self.address, job_id)
                if not isinstance(failure, CoordinatorUnavailable):
                    raise failure from None
                if on_away is not None:
                    on_away()
                time.sleep(reconnect_after_s)

    def frames(self, job_id: str) -> list[pb.Frame]:
        """Every frame of the job with its state, node and Proof-of-Render verdict."""
        with _rpc(self.address, job_id):
            return list(self.client.jobs.ListFrames(pb.ListFramesRequest(job_id=job_id),
                                                    timeout=CALL_TIMEOUT_S).frames)

    def download(self, job_id: str, out_dir: Path, *,
                 on_progress: FrameProgress | None = None) -> Download:
        """Fetch every finished frame into out_dir, named after the scene's output path;
        resumes and skips files already there."""
        pattern = self.job(job_id).scene.output_path
        frames = self.frames(job_id)
        ready = sorted((frame for frame in frames if frame.state == pb.FRAME_STATE_DONE),
                       key=lambda frame: frame.frame)
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidRequest(f"cannot create {out_dir}: {error.strerror}") from None
        files: list[Path] = []
        with _rpc(self.address, job_id):
            for number, frame in enumerate(ready, 1):
                try:
                    files.append(download_blob(self.client.blobs, frame.image.sha256,
                                               out_dir / frame_file_name(frame, pattern)))
                except TransferError as error:
                    raise _transfer_error(error, self.address, job_id) from None
                if on_progress is not None:
                    on_progress(number, len(ready))
        return Download(files, len(frames) - len(ready), pattern)

    def preview(self, job_id: str, out: Path, *, fps: float = 24.0,
                frames_dir: Path | None = None,
                on_progress: FrameProgress | None = None) -> Preview:
        """An MP4 of the job's approved frames so far, in frame order, encoded by FFmpeg
        (frameproof.preview; the encoder is checked before anything is downloaded).

        The frames are downloaded into `frames_dir` (kept, resumed like `download`) or a
        temporary folder.
        """
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise InvalidRequest(f"fps must be more than 0 and at most {MAX_FPS}")
        out = Path(out)
        if out.suffix.lower() != ".mp4":
            raise InvalidRequest(f"{out}: the preview is an .mp4 file")
        try:
            encoder = find_encoder()
        except EncoderMissing as error:
            raise PreviewUnavailable(str(error)) from None
        with tempfile.TemporaryDirectory(prefix="frameproof-preview-") as work:
            fetched = self.download(job_id, Path(frames_dir or Path(work) / "frames"),
                                    on_progress=on_progress)
            if not fetched.files:
                raise CreatorError(f"job {job_id} has no approved frames yet "
                                   f"({fetched.not_ready} to come): preview it later")
            sequence = Path(work) / "sequence"
            sequence.mkdir()
            try:
                encode_mp4(fetched.files, out, fps=fps, work=sequence, encoder=encoder)
            except EncodeFailed as error:
                raise PreviewFailed(f"ffmpeg could not encode the preview: {error}") from None
        return Preview(out, len(fetched.files), fetched.not_ready)

    def cancel(self, job_id: str) -> pb.Job:
        """Stop the job: unverified frames are dropped (not charged), the rest refunded."""
        with _rpc(self.address, job_id):
            return self.client.jobs.CancelJob(pb.CancelJobRequest(job_id=job_id),
                                              timeout=CALL_TIMEOUT_S)

    def requeue(
        self,
        job_id: str,
        frames: str,
        *,
        max_cost_usd: float = 0.0,
        on_estimate: Callable[[pb.Estimate, float], None] | None = None,
    ) -> Requeued:
        """Render chosen done or failed frames again; the creator pays for the new renders.

        While the job's escrow is open the frames go back to its queue and are charged from
        it at the job's price. Once it has settled (escrow closed and refunded, finished or
        cancelled) they become a new job on the same scene with the same settings, escrowed
        like any submit (max_cost_usd, or the top of its own measured estimate; signed
        here); the settled job's charges and refund stay as they were (docs/PAYMENTS.md).
        """
        try:
            wanted = parse_frames(frames)
        except FrameSpecError as error:
            raise InvalidRequest(f"frames: {error}") from None
        if not math.isfinite(max_cost_usd) or max_cost_usd < 0:
            raise InvalidRequest("max cost must be positive (0: the top of the estimate)")
        try:
            with _rpc(self.address, job_id):
                answer = self.client.jobs.RequeueFrames(
                    pb.RequeueFramesRequest(job_id=job_id, frames=frames),
                    timeout=CALL_TIMEOUT_S)
            return Requeued(answer.job, list(answer.frames))
        except CoordinatorRefused as refusal:
            if refusal.code != "FAILED_PRECONDITION" or \
                    self.receipts(job_id).state != "settled":
                raise
        job = self.job(job_id)
        outside = sorted(set(wanted) - set(parse_frames(job.frames_spec)))
        if outside:
            raise CreatorError(f"frame {outside[0]} is not part of job {job.job_id} "
                                 f"(frames {job.frames_spec})")
        options = follow_up_options(job, wanted, max_cost_usd=max_cost_usd)
        submission = self.submit(job.scene_id, options, on_estimate=on_estimate)
        return Requeued(submission.job, wanted, job.job_id, submission)

    # -- money ---------------------------------------------------------------------------

    def top_up(self, job_id: str, usd: float) -> pb.TopUpResponse:
        """Add `usd` to the job's escrow (signed here, by this wallet); a paused job resumes.

        Only the job's creator may top up, and only while the job is neither cancelled nor
        finished (docs/PAYMENTS.md, "Pause and top-up").
        """
        if not math.isfinite(usd) or not 0 < usd <= MAX_TOPUP_USD:
            raise InvalidRequest(f"the top-up must be more than $0 and at most "
                                 f"${MAX_TOPUP_USD:,.0f}")
        with _rpc(self.address, job_id):
            deposit = self.client.jobs.PrepareDeposit(pb.PrepareDepositRequest(amount_usd=usd),
                                                      timeout=60)
            try:
                signed = sign_deposit(deposit.message, self.client.keypair)
            except DepositError as error:
                raise DepositRefused(str(error)) from None
            return self.client.jobs.TopUpJob(pb.TopUpRequest(
                job_id=job_id, signed_deposit=signed, amount_usd=usd), timeout=SUBMIT_TIMEOUT_S)

    def receipts(self, job_id: str) -> pb.Receipts:
        """What each frame of the job burned, and the refund."""
        with _rpc(self.address, job_id):
            return self.client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job_id), timeout=60)

    def wallet(self) -> pb.Wallet:
        """This creator's token balance and escrow."""
        with _rpc(self.address):
            return self.client.jobs.GetWallet(pb.WalletRequest(), timeout=60)

    def airdrop(self, tokens: float) -> pb.Wallet:
        """Test tokens (embedded chain and test clusters only)."""
        if not math.isfinite(tokens) or tokens <= 0:
            raise InvalidRequest("say how many tokens to airdrop (more than 0)")
        decimals = self.wallet().decimals
        with _rpc(self.address):
            return self.client.jobs.Airdrop(pb.AirdropRequest(
                tokens=int(tokens * 10**decimals)), timeout=120)


def _phase(name: str, started_at: float, ended_at: float) -> pb.JobPhase:
    return pb.JobPhase(phase=name, started_at=started_at, ended_at=ended_at,
                       seconds=max(0.0, ended_at - started_at))
