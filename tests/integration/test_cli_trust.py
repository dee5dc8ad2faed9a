"""A creator's mistakes, one command at a time: each ends in one line and a documented status.

Exit statuses (frameproof --help): 2 bad input found before anything is sent, 3 the
coordinator cannot be reached, 130 interrupted. None of these may end in a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE_SCENE

from coordinator.intake import SUPPORTED_ENGINES
from frameproof.cli import checks
from frameproof.cli.argv import globals_first, options_after_command
from frameproof.cli.main import build_parser
from frameproof.cli.main import main as frameproof

DEAD = "127.0.0.1:1"  # nothing listens there
SCENE = str(SAMPLE_SCENE)
JOB = "0123456789abcdef"

BAD_INPUTS = [
    # (what the creator typed, exit status, words the one line must contain)
    (["submit", "missing.blend"], 2, "no such file"),
    (["submit", str(ROOT / "README.md")], 2, "not a .blend"),
    (["submit", SCENE, "--samples", "0"], 2, "--samples must be at least 1"),
    (["submit", SCENE, "--resolution", "0x0"], 2, "width and height must be 1.."),
    (["submit", SCENE, "--resolution", "wide"], 2, "1920x1080"),
    (["submit", SCENE, "--resolution-percentage", "0"], 2, "--resolution-percentage"),
    (["submit", SCENE, "--max-cost", "0"], 2, "--max-cost must be more than 0"),
    (["submit", SCENE, "--max-cost", "nan"], 2, "--max-cost must be more than 0"),
    (["submit", SCENE, "--chunk", "0"], 2, "--chunk must be at least 1"),
    (["submit", SCENE, "--frames", "7-3"], 2, "--frames"),
    (["submit", SCENE, "--frames", "1-x"], 2, "--frames"),
    (["submit", SCENE, "--engine", "CYCLEZ"], 2, "not a render engine"),
    (["submit", SCENE, "--tier", "9"], 2, "invalid choice"),
    (["estimate", SCENE, "--samples", "0"], 2, "--samples must be at least 1"),
    (["estimate", SCENE, "--frames", "3-1"], 2, "--frames"),
    (["jobs", "--limit", "0"], 2, "--limit"),
    (["priority", JOB, "1000"], 2, "priority must be between"),
    (["priority", JOB, "high"], 2, "invalid int value"),
    (["requeue", JOB, "--frames", "x"], 2, "--frames"),
    (["requeue", JOB], 2, "--frames"),
    (["log", JOB, "x"], 2, "invalid int value"),
    (["log", JOB, "1"], 3, "cannot reach the coordinator"),
    (["watch"], 2, "job"),
    (["preview", JOB, "--fps", "0"], 2, "--fps must be more than 0"),
    (["preview", JOB, "--out", "x.gif"], 2, "the preview is an .mp4 file"),
    (["preview", JOB], 3, "cannot reach the coordinator"),
    (["frobnicate"], 2, "invalid choice"),
    # The coordinator is down: reported in one line, before any packing, as status 3.
    (["submit", SCENE, "--frames", "1-2"], 3, "cannot reach the coordinator"),
    (["estimate", SCENE], 3, "cannot reach the coordinator"),
    (["status", JOB], 3, "cannot reach the coordinator"),
    (["jobs"], 3, "cannot reach the coordinator"),
    (["pause", JOB], 3, "cannot reach the coordinator"),
    (["resume", JOB], 3, "cannot reach the coordinator"),
    (["requeue", JOB, "--frames", "1"], 3, "cannot reach the coordinator"),
    (["cancel", JOB], 3, "cannot reach the coordinator"),
]


@pytest.mark.parametrize(("argv", "status", "words"), BAD_INPUTS,
                         ids=[" ".join(case[0])[:60] for case in BAD_INPUTS])
def test_a_bad_input_ends_in_one_line(argv, status, words, tmp_path: Path, capsys):
    started = time.monotonic()
    try:
        code = frameproof([*argv, "--coordinator", DEAD,  # global options after the command
                           "--keypair", str(tmp_path / "id.json")])
    except SystemExit as exit_:  # argparse's own exit
        code = exit_.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines()
             if line and not line.startswith("creating a new Solana keypair")]
    assert code == status, captured.err
    assert len(lines) == 1, captured.err
    assert words in lines[0] and "Traceback" not in captured.err
    assert time.monotonic() - started < 15, "fails fast, no silent retries"


def test_a_missing_preview_encoder_is_one_line_before_any_call(tmp_path: Path, capsys,
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    code = frameproof(["preview", JOB, "--coordinator", DEAD,
                       "--keypair", str(tmp_path / "id.json")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("creating a new")]
    assert code == 2, err  # not 3: the coordinator (down) was never asked
    assert len(lines) == 1 and "pip install 'frameproof[preview]'" in lines[0]


def test_a_broken_keypair_is_one_line(tmp_path: Path, capsys):
    broken = tmp_path / "id.json"
    broken.write_text("not json")
    assert frameproof(["jobs", "--keypair", str(broken), "--coordinator", DEAD]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_lists_exit_statuses_and_every_option_has_help():
    parser = build_parser()
    assert "exit status:" in parser.format_help() and "130" in parser.format_help()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest != "help":  # options and positional arguments alike
                what = action.option_strings[0] if action.option_strings else action.dest
                assert action.help, f"frameproof {name} {what} has no help"


def test_every_option_of_the_farms_commands_has_help():
    from coordinator.cli import build_parser as coordinator_parser
    from render_node.cli import build_parser as node_parser
    from verifier.cli import build_parser as verifier_parser

    def undocumented(parser: argparse.ArgumentParser, name: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command, sub in action.choices.items():
                    missing += undocumented(sub, f"{name} {command}")
            elif action.dest != "help" and not action.help:
                missing.append(f"{name} {(action.option_strings or [action.dest])[0]}")
        return missing

    assert undocumented(coordinator_parser(), "render-coordinator") == []
    assert undocumented(node_parser(), "render-node") == []
    assert undocumented(verifier_parser(), "render-verifier") == []


def test_estimate_takes_exactly_the_options_submit_takes():
    """The same command line with `estimate` instead of `submit` prices that very job (the
    quotes are compared on a real coordinator in test_job_control_e2e)."""
    commands = build_parser()._subparsers._group_actions[0].choices

    def options(command: str) -> dict[str, tuple]:
        return {action.dest: (tuple(action.option_strings), action.default, action.type,
                              action.choices, action.nargs, action.required, action.const)
                for action in commands[command]._actions if action.dest != "help"}

    submit, estimate = options("submit"), options("estimate")
    assert estimate == submit
    for dest in submit:  # each is accepted, not merely declared
        action = next(a for a in commands["submit"]._actions if a.dest == dest)
        if action.option_strings and action.nargs != 0:
            value = {"frames": "1-2", "resolution": "8x8", "format": "png", "tier": "2",
                     "name": "x", "engine": "CYCLES"}.get(dest, "1")
            args = build_parser().parse_args(["estimate", SCENE, action.option_strings[0],
                                              value])
            assert getattr(args, dest) is not None


def test_engines_checked_locally_are_the_coordinators():
    assert checks.ENGINES == SUPPORTED_ENGINES


def test_global_options_go_before_or_after_the_command():
    parser = build_parser()
    moved = globals_first(parser, ["status", "abc", "--coordinator", "h:1", "--json",
                                   "--keypair=k.json"])
    args = parser.parse_args(moved)
    assert (args.command, args.job, args.coordinator, str(args.keypair), args.json) == (
        "status", "abc", "h:1", "k.json", True)
    from coordinator.cli import build_parser as coordinator_parser
    from render_node.cli import build_parser as node_parser

    node = node_parser()
    args = node.parse_args(options_after_command(
        node, ["--coordinator", "h:1", "--work-dir", "w", "run"]))
    assert (args.command, args.coordinator, str(args.work_dir)) == ("run", "h:1", "w")
    coordinator = coordinator_parser()
    args = coordinator.parse_args(options_after_command(
        coordinator, ["--data-dir", "d", "ledger", "check"]))
    assert (args.command, str(args.data_dir)) == ("ledger", "d")


def test_ctrl_c_says_the_job_keeps_running(tmp_path: Path):
    """`watch` waits for an absent coordinator; Ctrl-C there says what state things are in."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from frameproof.cli.entry import main; "
         "sys.exit(main())", "watch", JOB, "--coordinator", DEAD, "--keypair",
         str(tmp_path / "id.json")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(8)  # imports under load, then waiting for the coordinator
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"frameproof: interrupted; the job keeps running on the farm: frameproof watch {JOB}")


def test_ctrl_c_ends_the_cli_even_where_a_library_swallows_it(tmp_path: Path):
    """The watchdog: an interrupt caught and dropped (as gRPC's C core can) still ends it."""
    code = ("import sys, time; from frameproof.cli import interrupt\n"
            "interrupt.install()\n"
            "interrupt.interrupted_message('interrupted; the job keeps running')\n"
            "ready = False\n"
            "while True:\n"
            "    try:\n"
            "        if not ready:  # said inside the try: the SIGINT that follows is dropped\n"
            "            ready = True\n"
            "            print('ready', flush=True)\n"
            "        time.sleep(30)\n"
            "    except KeyboardInterrupt:\n"
            "        pass\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "frameproof: interrupted; the job keeps running"


def test_render_node_info_shows_the_saved_score(tmp_path: Path):
    from render_node.sysinfo import has_benchmark, save_benchmark

    assert not has_benchmark(tmp_path), "`render-node run` would measure on first start"
    save_benchmark(tmp_path, 2.5, 12.0)
    result = subprocess.run([sys.executable, "-m", "render_node.cli", "--work-dir",
                             str(tmp_path), "info"],  # options before the command work too
                            capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["benchmark_score"] == 2.5
