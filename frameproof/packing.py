"""Pack a .blend with everything it needs into a folder and describe it as a manifest.

Blender Asset Tracer (BAT) does the tracing and path rewriting: it plans with
`strategise()` and acts with `execute()`. The pack's project root is the
blend's own folder; dependencies outside it (`//../lib.blend`, absolute paths)
land under `_outside_project/<folder hash>/` (not BAT's copy of their absolute path), and
BAT rewrites the paths in the copied .blend files to point there.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath

from blender_asset_tracer import blendfile
from blender_asset_tracer.blendfile.exceptions import BlendFileError
from blender_asset_tracer.pack import Aborted, Packer, filesystem, transfer
from blender_asset_tracer.pack import progress as bat_progress

from frameproof.manifest import ManifestEntry, ManifestError, SceneManifest, sha256_file

# BAT writes this note at the top of every pack; it is not part of the scene.
_BAT_INFO_FILE = "pack-info.txt"
# Magic numbers of plain, gzip- and zstd-compressed .blend files.
_BLEND_MAGICS = (b"BLENDER", b"\x1f\x8b", b"\x28\xb5\x2f\xfd")
# BAT keeps opened blend files in a process-wide cache; packing is serialised
# so two packs never close each other's files.
_BAT_LOCK = threading.Lock()


class PackingError(Exception):
    """The scene cannot be packed: not a .blend, unreadable or corrupt."""


@dataclass(frozen=True)
class PackedScene:
    root: Path  # folder holding the packed files
    manifest: SceneManifest
    files: dict[str, Path]  # sha256 -> a file on disk with that content
    missing: list[str]  # dependencies BAT could not find (human readable paths)


def pack_scene(
    blend: Path, work_dir: Path, *, on_progress: Callable[[str], None] | None = None
) -> PackedScene:
    """Pack `blend` and its dependencies into a new folder under `work_dir`.

    Missing dependencies do not fail the pack (Blender renders without them,
    as it would on the creator's machine); they are listed in `missing` so
    the creator can decide.
    """
    blend = Path(blend).absolute()
    _check_is_blend(blend)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pack-", dir=work_dir))
    report = on_progress or (lambda _msg: None)
    try:
        with _BAT_LOCK:
            try:
                main_file, missing = _run_bat(blend, root, report)
            finally:
                blendfile.close_all_cached()
        manifest, files = _describe(root, main_file)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    report(f"packed {len(manifest.files)} files, {manifest.total_size} bytes")
    return PackedScene(root=root, manifest=manifest, files=files, missing=missing)


def _check_is_blend(blend: Path) -> None:
    if blend.suffix.lower() != ".blend":
        raise PackingError(f"{blend} is not a .blend file (its name does not end in .blend)")
    try:
        with open(blend, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise PackingError(f"{blend} does not exist") from None
    except IsADirectoryError:
        raise PackingError(f"{blend} is a folder, not a .blend file") from None
    except OSError as exc:
        raise PackingError(f"cannot read {blend}: {exc.strerror}") from None
    if not head.startswith(_BLEND_MAGICS):
        raise PackingError(
            f"{blend} is not a .blend file: it starts with {head!r}, not 'BLENDER' "
            "(or a gzip/zstd-compressed .blend)"
        )


def _run_bat(blend: Path, root: Path, report: Callable[[str], None]) -> tuple[str, list[str]]:
    """Plan and execute the BAT pack; return the main file path in the pack and what is missing."""
    project = blend.parent
    try:
        with _Packer(blend, project, str(root)) as packer:
            packer.progress_cb = _Progress(report)
            packer.strategise()
            packer.execute()
            main_file = packer.output_path.relative_to(root).as_posix()
            missing = sorted(_display(p, project) for p in packer.missing_files)
    except Aborted as exc:
        raise PackingError(f"packing {blend} was aborted: {exc}") from exc
    except BlendFileError as exc:
        raise PackingError(f"{blend} (or a file it links) is not a readable .blend: {exc}") from exc
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # a real I/O failure
            raise PackingError(f"packing {blend} failed: {exc}") from exc
        # BAT's parser is not hardened against damaged files: it fails with
        # ValueError, struct.error, ZstdError, BadGzipFile, EOFError... Any of
        # them means the same thing to the creator.
        raise PackingError(
            f"{blend} (or a file it links) is corrupt or not a .blend BAT can read "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return main_file, missing


def _describe(root: Path, main_file: str) -> tuple[SceneManifest, dict[str, Path]]:
    entries: list[ManifestEntry] = []
    files: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if rel == _BAT_INFO_FILE:
                continue
            if path.is_symlink():
                raise PackingError(f"BAT produced a symlink in the pack: {rel}")
            sha = sha256_file(path)
            entries.append(ManifestEntry(path=rel, sha256=sha, size=path.stat().st_size))
            files.setdefault(sha, path)
    try:
        return SceneManifest(main_file=main_file, files=tuple(entries)), files
    except ManifestError as exc:
        raise PackingError(f"the packed scene cannot be described: {exc}") from exc


def _display(path: Path, project: Path) -> str:
    try:
        return path.relative_to(project).as_posix()
    except ValueError:
        return str(path)


class _Packer(Packer):
    """BAT's Packer with its scratch folder (rewritten .blend copies) beside the pack.

    BAT puts it in the system temp folder, often a small tmpfs, and rewritten
    .blend files can be gigabytes; beside the pack, BAT's final move of them
    is a rename on the same filesystem. Relies on BAT 1.x internals
    (`_tmpdir`, `_rewrite_in`), pinned in pyproject.toml.
    """

    def __init__(self, blend: Path, project: Path, target: str) -> None:
        super().__init__(blend, project, target)
        self._tmpdir.cleanup()
        self._tmpdir = tempfile.TemporaryDirectory(prefix=".bat-", dir=Path(target).parent)
        self._rewrite_in = Path(self._tmpdir.name)

    def _find_new_paths(self) -> None:
        """Outside files go to ``_outside_project/<hash of their folder>/<name>``.

        BAT keeps the whole absolute path there (``_outside_project/home/alice/clients/...``),
        which would show every node the creator's user name and folder layout. A hash of the
        folder keeps files of one folder together (sequences, UDIMs) and apart from files of
        the same name elsewhere; BAT rewrites the .blend paths to the new place either way.
        """
        for path in self._new_location_paths:
            action = self._actions[path]
            folder = hashlib.sha256(str(path.parent).encode()).hexdigest()[:16]
            action.new_path = Path(self._target_path, "_outside_project", folder, path.name)

    def _create_file_transferer(self) -> transfer.FileTransferer:
        return FileCopier()

    def close(self) -> None:
        """Also stop BAT's copier thread when packing failed half-way.

        Otherwise it waits for more files forever, and being a non-daemon thread it keeps
        the whole process from exiting.
        """
        transferer = self._file_transferer
        if transferer is not None and transferer.is_alive():
            transferer.abort_and_join()
        super().close()


class ClosableQueue(queue.PriorityQueue):  # type: ignore[type-arg]
    """BAT's copy queue, which a waiting reader leaves at once when it is closed and empty.

    BAT's copier waits for the next file in half-second polls and notices the end of the
    pack only at the next poll: ~0.5 s of every pack, most of a tiny scene's.
    """

    closed = False

    def close(self) -> None:
        with self.mutex:
            self.closed = True
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None):  # type: ignore[no-untyped-def]
        with self.not_empty:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._qsize():
                left = None if end is None else end - time.monotonic()
                if self.closed or not block or (left is not None and left <= 0):
                    raise queue.Empty
                self.not_empty.wait(left)
            item = self._get()
            self.not_full.notify()
            return item


class FileCopier(filesystem.FileCopier):
    """BAT's copier, taking a file's size before it queues the file's move, and ending as
    soon as the last file is copied.

    BAT 1.x queues the move first and then reads the size, so its copier thread can move
    the file away in between: "No such file or directory: .../pack-info.txt" (seen in CI).
    Its end is polled twice (the copy queue and the progress queue, up to 0.5 s each):
    measured 1.09 s for a 100 KB scene before, of which the copying took milliseconds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.queue = ClosableQueue(maxsize=100)

    def done_and_join(self) -> None:
        self.done.set()
        if isinstance(self.queue, ClosableQueue):
            self.queue.close()  # the copier drains what is queued, then ends at once
        super().done_and_join()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the copier, running its progress reports meanwhile (BAT's own join
        blocks up to 0.5 s on the progress queue after the copier has ended)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (end is None or time.monotonic() < end):
            threading.Thread.join(self, 0.05)
            self.progress_cb.flush()
        self.progress_cb.flush()

    def queue_move(self, src: Path, dst: PurePath) -> None:
        if src.is_dir():
            raise TypeError(f"only files can be moved, not directories: {src}")
        assert not self.done.is_set(), "Queueing not allowed after done_and_join() was called"
        assert not self._abort.is_set(), "Queueing not allowed after abort_and_join() was called"
        if self.has_error:
            return
        size = src.stat().st_size
        self.queue.put((src, dst, transfer.Action.MOVE))
        self.total_queued_bytes += size


class _Progress(bat_progress.Callback):
    """Turns BAT's progress callbacks into one-line messages."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report

    def trace_blendfile(self, filename: Path) -> None:
        self._report(f"reading {filename}")

    def trace_asset(self, filename: Path) -> None:
        self._report(f"found {filename}")

    def missing_file(self, filename: Path) -> None:
        self._report(f"missing {filename}")

    def rewrite_blendfile(self, orig_filename: Path) -> None:
        self._report(f"rewriting paths in {orig_filename}")

    def transfer_file(self, src: Path, dst: Path) -> None:
        self._report(f"copying {src}")
