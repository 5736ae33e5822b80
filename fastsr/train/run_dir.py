"""The run folder of a training run: ``config.yaml``, ``log.jsonl`` and ``checkpoints/``.

Safety of earlier work: a folder that holds anything is refused unless the run resumes
(continues it) or overwrites (deletes its ``config.yaml``, ``log.jsonl`` and
``checkpoints/`` first, other files are left); temporary files of interrupted writes are
deleted at start; on resume ``log.jsonl`` keeps only the records up to the checkpoint's
iteration, so the log continues as if the run had not stopped. In a multi-process run only
the main process (rank 0) writes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastsr.errors import UserError
from fastsr.models.checkpoint import atomic_write, remove_temp_files

__all__ = ["RunDir", "RUN_FILES"]

#: what a run writes into its folder (and ``overwrite`` deletes)
RUN_FILES = ("config.yaml", "log.jsonl", "checkpoints")


class RunDir:
    """The folder ``out`` of a run; ``main``: this process writes (rank 0)."""

    def __init__(self, out, main: bool = True):
        self.out = Path(out)
        self.ckpt_dir = self.out / "checkpoints"
        self.main = main

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
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if entries and not resume:
            if not overwrite:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise UserError(f"run folder {out} is not empty ({shown}): continue that run with --resume, "
                                "replace it with --overwrite, or choose another --out")
            if self.main:
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

    def start(self, config_text: str, iteration: int) -> None:
        """At the start of training: write ``config.yaml`` and trim the log to ``iteration``."""
        if not self.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(config_text)
        self.trim_log(iteration)

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
