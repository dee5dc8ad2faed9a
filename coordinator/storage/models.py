"""Tables. Times are Unix seconds (float): compared in SQL for lease expiry."""

from __future__ import annotations

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
    frames_spec: str
    chunk_size: int = 1
    settings_json: str  # effective RenderSettings as JSON
    cancelled: bool = False
    created_at: float
    updated_at: float
    error: str = ""


class TaskRecord(SQLModel, table=True):
    """One lease-able unit of work: a contiguous chunk of a job's frames."""

    __tablename__ = "task"
    task_id: str = Field(primary_key=True)
    job_id: str = Field(foreign_key="job.job_id", index=True)
    first_frame: int
    last_frame: int
    state: str = Field(index=True)
    attempts: int = 0  # failed or abandoned leases so far
    lease_id: str | None = Field(default=None, index=True)
    node_id: str | None = None
    lease_expires_at: float | None = None
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
    blob_size: int
    extension: str
    render_seconds: float
    blender_version: str = ""
    device: str = ""
    created_at: float


class NodeRecord(SQLModel, table=True):
    __tablename__ = "node"
    node_id: str = Field(primary_key=True)  # public key, base58
    name: str = ""
    capabilities_json: str = "{}"
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
