"""Config files: precedence (default < file < environment < flag), errors that name the file
and line, the documentation and examples, and a real coordinator started from a file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from coordinator.cli import build_parser as coordinator_parser
from frameproof import config, config_docs
from frameproof.cli.main import build_parser as creator_parser
from frameproof.localfarm import LocalFarm
from frameproof.v1 import farm_pb2 as pb
from render_node.cli import build_parser as node_parser

ROOT = Path(__file__).resolve().parents[2]


def serve_args(argv: list[str]):  # type: ignore[no-untyped-def]
    parser = coordinator_parser()
    role = config.coordinator_role(config.subcommand_parsers(parser)["serve"])
    return config.parse_args(parser, ["serve", *argv], role)


def node_args(argv: list[str]):  # type: ignore[no-untyped-def]
    parser = node_parser()
    role = config.node_role(config.subcommand_parsers(parser)["run"])
    return config.parse_args(parser, ["run", *argv], role)


def creator_args(argv: list[str], default_path: Path | None = None):  # type: ignore[no-untyped-def]
    parser = creator_parser()
    return config.parse_args(parser, argv, config.creator_role(parser), default_path)


@pytest.fixture(autouse=True)
def no_config_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("RENDER_COORDINATOR_", "RENDER_NODE_", "FRAMEPROOF_")):
            monkeypatch.delenv(name)


def test_default_file_environment_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "coordinator.toml"
    file.write_text("# the farm\nlease_seconds = 5\nmax_attempts = 7\nno_verifier = true\n"
                    'admin_pubkey = ["A1", "B2"]\ndata_dir = "farm"\n')
    assert serve_args([]).lease_seconds == 60.0  # built in
    from_file = serve_args(["--config", str(file)])
    assert (from_file.lease_seconds, from_file.max_attempts) == (5.0, 7)
    assert from_file.no_verifier is True and from_file.admin_pubkey == ["A1", "B2"]
    assert from_file.data_dir == tmp_path / "farm"  # relative to the file's folder
    monkeypatch.setenv("RENDER_COORDINATOR_LEASE_SECONDS", "9")
    monkeypatch.setenv("RENDER_COORDINATOR_NO_VERIFIER", "no")
    from_env = serve_args(["--config", str(file)])
    assert (from_env.lease_seconds, from_env.max_attempts, from_env.no_verifier) == (9.0, 7,
                                                                                      False)
    from_flag = serve_args(["--config", str(file), "--lease-seconds", "11", "--data-dir", "x"])
    assert from_flag.lease_seconds == 11.0 and from_flag.data_dir == Path("x")
    # A repeatable flag adds to the file's list (argparse appends to its default).
    assert serve_args(["--config", str(file), "--admin-pubkey", "C3"]).admin_pubkey == [
        "A1", "B2", "C3"]


def test_node_file_supplies_a_required_flag(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "node.toml"
    file.write_text('work_dir = "/srv/node"\ncoordinator = "farm:50051"\nthreads = 2\n'
                    'metrics = "127.0.0.1:9101"\n')
    args = node_args(["--config", str(file)])
    assert (args.work_dir, args.coordinator, args.threads) == (Path("/srv/node"), "farm:50051", 2)
    assert args.metrics == "127.0.0.1:9101"
    monkeypatch.setenv("FRAMEPROOF_COORDINATOR", "other:1")  # the node's existing variable
    assert node_args(["--config", str(file)]).coordinator == "other:1"
    with pytest.raises(SystemExit) as missing:
        node_args([])
    assert missing.value.code == 2  # still required without a file


def test_creator_defaults_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "config.toml"
    file.write_text('coordinator = "farm.example:443"\ntls_ca = "ca.pem"\n\n[submit]\n'
                    "tier = 2\nchunk = 4\n\n[download]\nout = \"frames\"\n")
    args = creator_args(["submit", "scene.blend"], default_path=file)
    assert (args.coordinator, args.tier, args.chunk) == ("farm.example:443", 2, 4)
    assert args.tls_ca == tmp_path / "ca.pem"
    assert creator_args(["submit", "s.blend", "--tier", "1"], file).tier == 1
    # estimate prices the job submit would send: [submit]'s settings unless [estimate]'s
    estimate = creator_args(["estimate", "s.blend"], file)
    assert (estimate.tier, estimate.chunk) == (2, 4)
    own = tmp_path / "own.toml"
    own.write_text("[submit]\ntier = 2\nchunk = 4\n\n[estimate]\ntier = 1\n")
    estimate = creator_args(["estimate", "s.blend"], own)
    assert (estimate.tier, estimate.chunk) == (1, 4)
    monkeypatch.setenv("FRAMEPROOF_SUBMIT_TIER", "3")
    assert creator_args(["estimate", "s.blend"], file).tier == 3
    assert creator_args(["submit", "s.blend"], file).tier == 3
    monkeypatch.setenv("FRAMEPROOF_COORDINATOR", "env:1")
    assert creator_args(["jobs"], file).coordinator == "env:1"
    assert creator_args(["download", "JOB"], file).out == tmp_path / "frames"
    # No file at the default place: fine, built-in defaults.
    assert creator_args(["jobs"], tmp_path / "absent.toml").limit == 20
    # $FRAMEPROOF_CONFIG names the default file.
    monkeypatch.setenv("FRAMEPROOF_CONFIG", str(file))
    assert config.default_creator_config() == file


@pytest.mark.parametrize(("text", "message"), [
    ('listen = "127.0.0.1:0"\n\nleese_seconds = 5\n',
     r"c\.toml:3: unknown setting 'leese_seconds' for render-coordinator serve \(known: "),
    ('# x\nlease_seconds = "sixty"\n',
     r"c\.toml:2: lease_seconds must be a number, not a string \('sixty'\)"),
    ("max_attempts = 2.5\n", r"c\.toml:1: max_attempts must be an integer, not a number"),
    ("no_verifier = 1\n", r"c\.toml:1: no_verifier must be true or false, not an integer"),
    ("lease_seconds = true\n", r"c\.toml:1: lease_seconds must be a number, not true/false"),
    ('admin_pubkey = "A1"\n', r"c\.toml:1: admin_pubkey must be a list of strings"),
    ("\n\npeer_audit_rate = 2\n", r"c\.toml:3: peer_audit_rate = 2: 2 is not between 0 and 1"),
    ("[serve]\nlisten = 1\n", r"c\.toml:1: unknown setting 'serve'"),
    ("listen = [\n", r"c\.toml: not valid TOML: "),
])
def test_bad_files_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      text: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        serve_args(["--config", str(file)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error


def test_bad_creator_file_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "config.toml"
    file.write_text("[submit]\ntier = 1\n\n[submit.extra]\n")
    with pytest.raises(SystemExit):
        creator_args(["jobs"], file)
    assert "config.toml:4: unknown setting [submit] 'extra'" in capsys.readouterr().err
    file.write_text("[submit]\n\ntier = 4\n")
    with pytest.raises(SystemExit):
        creator_args(["jobs"], file)
    assert "config.toml:3: tier = 4 is not one of 1, 2, 3" in capsys.readouterr().err
    file.write_text("")
    monkeypatch.setenv("RENDER_NODE_THREADS", "many")
    with pytest.raises(SystemExit):
        node_args(["--work-dir", "w"])
    assert "$RENDER_NODE_THREADS: threads = 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_args(["--config", str(tmp_path / "absent.toml")])
    assert "absent.toml: no such config file" in capsys.readouterr().err


def test_a_bad_file_stops_the_coordinator_before_it_starts(tmp_path: Path) -> None:
    file = tmp_path / "coordinator.toml"
    file.write_text('data_dir = "farm"\nlisten = "127.0.0.1:0"\nlease_secs = 5\n')
    result = subprocess.run([sys.executable, "-m", "coordinator.cli", "serve", "--config",
                             str(file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"render-coordinator: {file}:3: unknown setting")
    assert not (tmp_path / "farm").exists()  # nothing created


def test_coordinator_runs_from_its_file(tmp_path: Path) -> None:
    file = tmp_path / "coordinator.toml"
    file.write_text('http = "127.0.0.1:0"\nno_verifier = true\nmax_attempts = 2\n')
    with LocalFarm(tmp_path / "farm") as farm:
        farm.start_coordinator(extra_args=("--config", str(file)))
        assert farm.coordinator is not None and farm.coordinator.stdout is not None
        assert farm.coordinator.stdout.readline().decode().startswith("http on 127.0.0.1:")
        # The built-in verifier, when on, makes its work dir in a task scheduled before the
        # coordinator serves: once a call has been answered, the dir would be there.
        with farm.client() as client:
            client.jobs.ListJobs(pb.ListJobsRequest(), timeout=30)
        assert not (farm.data_dir / "verifier").exists()  # no_verifier = true took effect


def test_every_setting_is_documented_and_the_examples_are_valid(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    for role, _name, example in config_docs.all_roles():
        for section, table in role.settings().items():
            for key, setting in table.items():
                assert f"| `{key}` |" in doc and f"`{setting.env}`" in doc, (
                    f"{role.name} {section} {key} is not in docs/CONFIG.md: run "
                    "`python -m frameproof.config --write`")
        text = (ROOT / example).read_text()
        commented = re.findall(r"^# (\w+) = ", text, re.M)
        assert sorted(commented) == sorted(k for t in role.settings().values() for k in t), (
            f"{example} is out of date: run `python -m frameproof.config --write`")
        # All commented out: the example changes nothing; uncommented, every line is valid.
        config.apply(role, ROOT / example, environ={})
        uncommented = tmp_path / Path(example).name
        uncommented.write_text(re.sub(r"^# (\w+ = )", r"\1", text, flags=re.M))
        config.apply(role, uncommented, environ={})


def test_deploy_docs_and_units_use_real_settings_and_commands() -> None:
    """The coordinator.toml in docs/DEPLOY.md is valid, and the units run commands we ship."""
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    (snippet,) = re.findall(r"```toml\n(.*?)```", deploy, re.S)
    roles = {name: role for role, name, _ in config_docs.all_roles()}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "coordinator.toml"
        path.write_text(snippet)
        config.apply(roles["coordinator.toml"], path, environ={})  # raises on a bad line
    pyproject = (ROOT / "pyproject.toml").read_text()
    for unit in sorted((ROOT / "deploy").glob("*.service")):
        command = re.search(r"^ExecStart=/opt/frameproof/venv/bin/(\S+)", unit.read_text(), re.M)
        assert command and f"\n{command.group(1)} = " in pyproject, unit.name
