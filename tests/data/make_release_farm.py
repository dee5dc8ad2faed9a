"""Make tests/data/release-2026-11-23/: a coordinator data dir written by the previous release.

Run with the code of that release (commit da2f59f, the last of 2026-11-23), not this tree:

    git worktree add /tmp/old da2f59f && cd /tmp/old && make proto
    PYTHONPATH=$PWD python /path/to/tests/data/make_release_farm.py OUT_DIR
    PYTHONPATH=$PWD python /path/to/tests/data/make_release_farm.py OUT_DIR \
        postgresql+psycopg2://postgres@127.0.0.1:5432/release   # an empty database

With a PostgreSQL URL the farm runs on it and OUT_DIR/farm.sql is its pg_dump; without, the
SQLite database is OUT_DIR/farm.db.gz. tests/data/release-2026-11-23/{sqlite,postgresql} are
its two outputs.

It renders a two-frame job of the sample scene on one node, waits until the refund has landed
and closes an epoch, so the old database holds jobs, frames, verifications, charges, burns, a
refund and a mint. Its schema predates bonds, budgets, pricing probes, job control and frame
logs (twelve tables and a column later), which is what the upgrade test migrates.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import make_url

from frameproof.cli import submit
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb

TINY = {"resolution_percentage": 10, "samples": 2, "max_cost": 1.0}


def main(out: Path, db_url: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="release-farm-"))
    scene = Path.cwd() / "samples" / "spinning_cube.blend"
    with LocalFarm(root, lease_seconds=4.0) as farm:
        farm.start_coordinator(extra_args=("--db", db_url) if db_url else ())
        farm.start_node("node")
        with farm.client() as client:
            args = submit.build_namespace(scene, frames="1-2", **TINY)
            job = submit.submit_scene(args, client)[0]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                receipts = client.jobs.GetReceipts(pb.ReceiptsRequest(job_id=job.job_id),
                                                   timeout=30, wait_for_ready=True)
                if receipts.refund_state == "landed":
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("the job did not settle")
        closed = subprocess.run([sys.executable, "-m", "coordinator.cli", "epoch", "close",
                                 "--data-dir", str(farm.data_dir)], capture_output=True,
                                text=True, timeout=300)
        if closed.returncode != 0:
            raise SystemExit(closed.stderr)
    keep(farm.data_dir, out, db_url)
    shutil.copy(farm.creator_keypair, out / "creator-keypair.json")
    print(f"{out}: job {job.job_id}")


def keep(data_dir: Path, out: Path, db_url: str | None) -> None:
    """What the tests need, small: the database, the chain, the keys, the blobs but the .blend.

    The scene's .blend (88 KB) and the caches (scenes/, verifier/, nonces/) are left out:
    nothing the upgrade test does reads them.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("chain", "blobs"):
        shutil.copytree(data_dir / name, out / name)
    for name in ("admin-keypair.json", "coordinator.json"):
        shutil.copy(data_dir / name, out / name)
    for blob in (out / "blobs").rglob("*"):
        if blob.is_file() and blob.read_bytes().startswith((b"BLENDER", b"\x28\xb5\x2f\xfd")):
            blob.unlink()
    if db_url is None:
        (out / "farm.db.gz").write_bytes(gzip.compress((data_dir / "farm.db").read_bytes(), 9))
        return
    url = make_url(db_url)
    dump = subprocess.run(["pg_dump", "-h", url.host or "127.0.0.1", "-U",
                           url.username or "postgres", "--inserts", "--no-owner",
                           "--no-privileges", url.database or ""],
                          capture_output=True, text=True, check=True)
    # psql's meta-commands and comments out: the test runs the statements through the driver.
    lines = [line for line in dump.stdout.splitlines()
             if line and not line.startswith(("\\", "--"))]
    (out / "farm.sql").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2] if len(sys.argv) > 2 else None)
