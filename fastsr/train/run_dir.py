"""The run folder of a training run: ``config.yaml``, ``log.jsonl`` and ``checkpoints/``.

Safety of earlier work: a folder that holds anything is refused unless the run resumes
(continues it) or overwrites (deletes its ``config.yaml``, ``log.jsonl`` and
``checkpoints/`` first, other files are left); temporary files of interrupted writes are
deleted at start; on resume ``log.jsonl`` keeps only the records up to the checkpoint's
iteration, so the log continues as if the run had not stopped. In a multi-process run only
the main process (rank 0) writes. While a run prepares and trains, its folder is locked
(``flock`` on ``.lock`` in it): a second ``fastsr train`` into the same folder gets a one-line
error instead of both writing one ``log.jsonl`` (or ``--overwrite`` deleting the other's
checkpoints).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from fastsr.errors import UserError
from fastsr.models.checkpoint import atomic_write, remove_temp_files

__all__ = ["RunDir", "RUN_FILES", "config_changes"]

#: what a run writes into its folder (and ``overwrite`` deletes)
RUN_FILES = ("config.yaml", "log.jsonl", "checkpoints")
#: the lock file a running run holds in its folder
LOCK_FILE = ".lock"


def config_changes(old, new, prefix: str = "") -> dict[str, list]:
    """The leaves that differ between two config trees, as ``{dotted key: [old, new]}``
    (a key missing on one side shows as ``None`` there)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = {}
        for k in list(old) + [k for k in new if k not in old]:
            out.update(config_changes(old.get(k), new.get(k), f"{prefix}{k}."))
        return out
    return {} if old == new else {prefix[:-1]: [old, new]}


class RunDir:
    """The folder ``out`` of a run; ``main``: this process writes (rank 0)."""

    def __init__(self, out, main: bool = True):
        self.out = Path(out)
        self.ckpt_dir = self.out / "checkpoints"
        self.main = main
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the folder's lock (creating the folder), held until :meth:`release`.

        Raises:
            UserError: another process (or another run of this one) holds it.
        """
        if not self.main or self._lock_fd is not None:
            return
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"run folder {self.out} is in use by another training run (it holds "
                            f"{self.out / LOCK_FILE}); wait for it to end or choose another --out") from None
        self._lock_fd = fd

    def release(self) -> None:
        """Give the folder's lock back (the lock file stays; it holds nothing)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Refuse a folder holding earlier work unless ``resume`` or ``overwrite``; with
        ``overwrite`` delete the earlier run's files; delete orphan temporary files.

        Raises:
            UserError: both flags; ``out`` is a file; ``out`` holds files and neither is set.
        """
        out = self.out
        if resume and overwrite:
            raise UserError(f"resume and overwrite exclude each other: continue the run in {out} or replace it, "
                            "not both")
        if out.exists() and not out.is_dir():
            raise UserError(f"run folder {out} is a file, not a folder")
        entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
        if entries and not resume and not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise UserError(f"run folder {out} is not empty ({shown}): continue that run with --resume, "
                            "replace it with --overwrite, or choose another --out")
        self.lock()  # before anything is deleted or written
        if entries and not resume and self.main:
            self._delete_run_files()
        if self.main:
            remove_temp_files(self.ckpt_dir)

    def _delete_run_files(self) -> None:
        for name in RUN_FILES:
            p = self.out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def start(self, config_text: str, iteration: int) -> dict[str, list]:
        """At the start of training: trim the log to ``iteration``, write ``config.yaml``.

        A resumed run (``iteration`` > 0) whose config differs from the ``config.yaml`` it
        left gets a ``{"iter": iteration, "config_changes": {key: [old, new]}}`` record in
        ``log.jsonl``, so that the log keeps what each stretch of the run trained with.

        Returns:
            the changed keys (dotted, e.g. ``train.iters``) with ``[old, new]`` values; empty
            for a new run, an unchanged config or a process that does not write.
        """
        if not self.main:
            return {}
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.yaml"
        changes = {}
        if iteration > 0 and path.is_file():
            changes = config_changes(yaml.safe_load(path.read_text()), yaml.safe_load(config_text))
        self.trim_log(iteration)
        if changes:
            self.log({"iter": iteration, "config_changes": changes})
        atomic_write(path, config_text.encode())
        return changes

    def log(self, record: dict) -> None:
        """Append one JSON record to ``log.jsonl``."""
        if self.main:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def trim_log(self, iteration: int) -> None:
        """Keep the records of ``log.jsonl`` up to ``iteration`` (the checkpoint resumed
        from; all of them are dropped for 0), and drop a line cut short by a kill."""
        path = self.out / "log.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("iter"), int) and rec["iter"] <= iteration:
                keep.append(line + "\n")
        atomic_write(path, "".join(keep).encode())
