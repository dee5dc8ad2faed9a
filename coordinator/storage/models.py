"""Tables. Times are Unix seconds (float): compared in SQL for lease expiry."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel


class SceneRecord(SQLModel, table=True):
    """A scene manifest that passed inspection; its id is the manifest's sha256."""

    __tablename__ = "scene"
    scene_id: str = Field(primary_key=True)
    main_file: str
    info_json: str  # SceneInfo as JSON: what inspection found
    created_at: float


class SceneFileRecord(SQLModel, table=True):
    """Which blobs make up a scene: decides who may download a blob."""

    __tablename__ = "scene_file"
    scene_id: str = Field(primary_key=True, foreign_key="scene.scene_id")
    sha256: str = Field(primary_key=True, index=True)


class JobRecord(SQLModel, table=True):
    __tablename__ = "job"
    job_id: str = Field(primary_key=True)
    name: str = ""
    scene_id: str = Field(foreign_key="scene.scene_id", index=True)
    creator: str = Field(default="", index=True)  # the submitter's public key
    tier: int = 3  # 1: trusted nodes only ... 3: any node past probation or on it
    max_cost_usd: float = 0.0
    frames_spec: str
    chunk_size: int = 1
    settings_json: str  # effective RenderSettings as JSON
    cancelled: bool = False
    # Escrow closed: the uncharged rest went back to the creator. Indexed because settlement
    # looks for the few unsettled jobs every second.
    settled: bool = Field(default=False, index=True)
    created_at: float = Field(index=True)  # the dashboard lists jobs newest first, paged
    updated_at: float
    error: str = ""


class JobBudgetRecord(SQLModel, table=True):
    """How much of its escrow a job may commit to new leases, and whether it is paused.

    A row per job submitted with escrow (see coordinator.domain.budget). Leasing skips paused jobs;
    the settlement sweep pauses a job whose next charge or lease the escrow cannot cover and
    resumes it once it can (after a top-up).
    """

    __tablename__ = "job_budget"
    job_id: str = Field(primary_key=True, foreign_key="job.job_id")
    # Expected price of one frame in token base units (the estimate at submit): reserved
    # for every frame in flight until charges give the job's own mean price.
    frame_price_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    paused: bool = Field(default=False, index=True)
    reason: str = ""  # why it is paused (coordinator.domain.budget: LEASE_SHORT or CHARGE_SHORT)
    # The charge of the frame waiting for money (CHARGE_SHORT), for the suggested top-up.
    waiting_cost_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: float = 0.0


class TaskRecord(SQLModel, table=True):
    """One lease-able unit of work: a contiguous chunk of a job's frames."""

    __tablename__ = "task"
    # Leasing walks queued tasks in this order: the index makes it a scan of a few rows.
    # A node's own tasks (its leases in flight, its frames per job) by the second; a job's
    # tasks in a state (the settlement sweep, the budget gate) by the third.
    __table_args__ = (Index("ix_task_queue", "state", "queued_at", "first_frame"),
                      Index("ix_task_node", "node_id", "state"),
                      Index("ix_task_job_state", "job_id", "state"))
    task_id: str = Field(primary_key=True)
    job_id: str = Field(foreign_key="job.job_id", index=True)
    first_frame: int
    last_frame: int
    state: str = Field(index=True)
    attempts: int = 0  # failed or abandoned leases so far
    lease_id: str | None = Field(default=None, index=True)
    node_id: str | None = None
    lease_expires_at: float | None = None
    leased_at: float | None = None  # the lease's start: the network's measure of its speed
    queued_at: float  # FIFO order among queued tasks
    updated_at: float
    error: str = ""


class FrameResultRecord(SQLModel, table=True):
    """The accepted image of one frame. Written once, with its task's completion."""

    __tablename__ = "frame_result"
    job_id: str = Field(primary_key=True, foreign_key="job.job_id")
    frame: int = Field(primary_key=True)
    task_id: str = Field(foreign_key="task.task_id")
    node_id: str
    blob_sha256: str
    # Blobs may reach 8 GiB (blobstore.DEFAULT_MAX_BLOB_BYTES): PostgreSQL's INTEGER stops at
    # 2 GiB (SQLite's integers are 64-bit anyway).
    blob_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    extension: str
    render_seconds: float
    blender_version: str = ""
    device: str = ""
    verdict: str = "pending"  # pending -> approved (rejected results are deleted)
    verification: str = ""  # what Proof-of-Render said, for people
    pixel_sha256: str = Field(default="", index=True)  # hash of the decoded pixels
    charged: bool = Field(default=False, index=True)  # its burn and its node's credit are booked
    receipt_signature: str = ""  # the node's signed claim (frameproof.receipts), for audit
    receipt_proof: str = ""  # its path to the root of the tree signed ("": signed alone)
    created_at: float
    # The node's passes file (multilayer EXR) of a denoised frame checked on its noisy pass:
    # the verifier's, never the creator's. None: the node delivered none.
    passes_sha256: str | None = None
    passes_size: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class NodeRecord(SQLModel, table=True):
    __tablename__ = "node"
    node_id: str = Field(primary_key=True)  # public key, base58
    name: str = ""
    capabilities_json: str = "{}"
    benchmark_score: float = 1.0
    registered_at: float
    last_seen_at: float


class TaskFailureRecord(SQLModel, table=True):
    """Why a lease ended without a result; drives retries and node exclusion."""

    __tablename__ = "task_failure"
    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="task.task_id", index=True)
    job_id: str = Field(index=True)
    node_id: str = Field(index=True)
    reason: str
    at: float


class NodeStandingRecord(SQLModel, table=True):
    """A node's reputation state (see coordinator.domain.reputation for the model)."""

    __tablename__ = "node_standing"
    node_id: str = Field(primary_key=True)
    score: float = 0.5
    consecutive_verified: int = 0
    verified: int = 0
    failed: int = 0
    delivered: int = 0
    frames_since_failure: int | None = None
    quarantined: bool = False
    leases_completed: int = 0
    leases_abandoned: int = 0
    updated_at: float = 0.0


class ReputationEventRecord(SQLModel, table=True):
    """Every change of a node's reputation, with its reason: the operator's audit trail."""

    __tablename__ = "reputation_event"
    id: int | None = Field(default=None, primary_key=True)
    node_id: str = Field(index=True)
    at: float
    kind: str
    score_before: float
    score_after: float
    tier_after: str
    reason: str
    job_id: str = ""
    frame: int = 0
    details_json: str = "{}"


class VerificationRecord(SQLModel, table=True):
    """One frame's Proof-of-Render check: cheap checks always, tile re-renders when sampled."""

    __tablename__ = "verification"
    verification_id: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    frame: int
    task_id: str = Field(index=True)
    node_id: str = Field(index=True)
    image_sha256: str
    blender_version: str = ""
    device: str = ""
    render_tiles: bool
    state: str = Field(index=True)  # queued, leased, done, cancelled
    verifier_id: str = ""
    lease_expires_at: float | None = None
    passed: bool | None = None
    reason: str = ""
    mode: str = ""
    details_json: str = "{}"
    pixel_sha256: str = ""
    created_at: float
    finished_at: float | None = None


class PeerVerdictRecord(SQLModel, table=True):
    """A trusted node's verdict on another node's frame (peer verification).

    Peers scale verification with the network, but one peer's word never punishes a node and
    a secret share of its passes is audited: failed and audited checks go back to the queue for
    a coordinator verifier, whose verdict settles the frame and is compared with the peer's.
    """

    __tablename__ = "peer_verdict"
    verification_id: str = Field(primary_key=True)
    peer_id: str = Field(index=True)
    passed: bool
    reason: str = ""
    audited: bool = False  # sent to a coordinator verifier for a second opinion
    agreed: bool | None = None  # the audit's finding, once it is known
    at: float


class BlobOwnerRecord(SQLModel, table=True):
    """A key that has shown it holds a blob's bytes: it uploaded them, or proved it could.

    Content addressing stores a file once however many creators upload it; this table keeps
    the sha256 from becoming a read key: what a caller may reuse, and what FindMissingBlobs
    tells it is stored, is only what it owns (coordinator/storage/owners.py).
    """

    __tablename__ = "blob_owner"
    sha256: str = Field(primary_key=True)
    owner: str = Field(primary_key=True, index=True)  # the uploader's public key


class PriceProbeRecord(SQLModel, table=True):
    """A probe: the coordinator's own timed renders of a scene at a job's settings.

    Keyed by (scene, effective settings, probed frames), so SubmitJob reuses EstimateJob's.
    """

    __tablename__ = "price_probe"
    probe_key: str = Field(primary_key=True)  # sha256 of scene id, settings digest, frames
    scene_id: str = Field(index=True)
    frames_json: str  # the probed frames
    seconds_json: str  # this machine's seconds per probed frame (extrapolated for tiles)
    machine_score: float  # the coordinator's own benchmark score when it probed
    method: str  # full, tiles or fallback
    ms_per_frame: int  # reference milliseconds
    low_ms_per_frame: int
    high_ms_per_frame: int
    note: str = ""
    created_at: float


class JobQuoteRecord(SQLModel, table=True):
    """The quote a job was submitted with: what each of its frames' work is derived from."""

    __tablename__ = "job_quote"
    job_id: str = Field(primary_key=True)
    probe_key: str
    method: str
    ms_per_frame: int
    low_ms_per_frame: int
    high_ms_per_frame: int
    frames: int
    cost_usd: float
    cost_low_usd: float
    cost_high_usd: float
    created_at: float



class FrameTimingRecord(SQLModel, table=True):
    """A frame's timings: the node's claims next to the network's own measure and price."""

    __tablename__ = "frame_timing"
    job_id: str = Field(primary_key=True)
    frame: int = Field(primary_key=True)
    node_id: str = Field(index=True)
    wall_seconds: float  # lease to completion on the coordinator's clock, per frame of the lease
    claimed_seconds: float
    claimed_score: float
    work_ms: int = 0  # network-derived work, set when the frame is charged
    at: float


class JobControlRecord(SQLModel, table=True):
    """A creator's steering of one job: paused by them, and its priority among their jobs.

    A row only for jobs their creator steered. Independent of the budget's pause: leasing
    skips a job paused for either reason, and resuming here never lifts the other.
    """

    __tablename__ = "job_control"
    job_id: str = Field(primary_key=True, foreign_key="job.job_id")
    paused: bool = Field(default=False, index=True)
    priority: int = 0  # higher first, among the same creator's jobs only
    updated_at: float = 0.0


class FrameLogRecord(SQLModel, table=True):
    """Blender's output for a frame from the node whose render was recorded last (scrubbed
    of the node's paths by the node; at most frameproof.limits.FRAME_LOG_BYTES)."""

    __tablename__ = "frame_log"
    job_id: str = Field(primary_key=True, foreign_key="job.job_id")
    frame: int = Field(primary_key=True)
    node_id: str
    text: str = ""
    created_at: float = 0.0


class JobPhaseRecord(SQLModel, table=True):
    """A phase of a job that leaves no other trace (coordinator/domain/timeline.py): the
    creator's pack and upload, SubmitJob's inspection, quote and escrow, settlement."""

    __tablename__ = "job_phase"
    job_id: str = Field(primary_key=True)
    phase: str = Field(primary_key=True)
    started_at: float
    ended_at: float = 0.0
    seconds: float = 0.0
