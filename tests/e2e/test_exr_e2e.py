"""`frameproof submit --format exr` on a real farm (real Blender, gRPC, SQLite, verifier): the
frames are verified (exactly, on their float bits) and approved, the job ends done, and
`download` names the frames .exr."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLE_SCENE
from farm_helpers import wait_until_registered

from frameproof.cli.main import main as frameproof
from frameproof.localfarm import LocalFarm
from verifier.compare import load_exr


def fp(farm: LocalFarm, *args: str) -> int:
    return frameproof([*args, "--coordinator", farm.address, "--keypair",
                       str(farm.creator_keypair)])


def test_an_exr_job_is_verified_and_done(farm: LocalFarm, capsys, tmp_path: Path):
    farm.start_coordinator()
    farm.start_node("node")
    wait_until_registered(farm, ["node"])
    capsys.readouterr()
    assert fp(farm, "submit", str(SAMPLE_SCENE), "--format", "exr", "--frames", "1-2",
              "--resolution", "64x36", "--resolution-percentage", "100", "--samples", "4",
              "--max-cost", "1", "--json") == 0
    job = json.loads(capsys.readouterr().out)
    assert job["settings"]["output_format"] == "exr"
    assert fp(farm, "watch", job["job_id"]) == 0, capsys.readouterr().err  # 0: every frame done
    capsys.readouterr()
    assert fp(farm, "frames", job["job_id"], "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["state"] for row in rows] == ["done", "done"]
    # A new, unbonded node has every frame re-rendered in part; same build and device: exact.
    assert all("exact, float bits" in row["verification"] for row in rows), rows

    out = tmp_path / "frames"
    assert fp(farm, "download", job["job_id"], "--out", str(out)) == 0
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert [p.suffix for p in files] == [".exr", ".exr"], files
    first, second = (load_exr(p, (64, 36)) for p in files)
    assert first.dtype.name == "float32" and not (first == second).all(), "two frames differ"
