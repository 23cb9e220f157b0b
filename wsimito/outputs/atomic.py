"""The one way wsimito writes a file or a folder: nobody ever sees it half-written under its final name.

A file is written beside its target under a hidden temporary name, synced to disk, then renamed over the
target (a rename within one folder is atomic, on local disks and on NFS, Lustre and GPFS alike) and the folder
synced, so the new name survives a crash too. A run killed, or a write that fails, leaves the old target as it
was and no temporary file behind (``kill -9`` excepted: a hidden ``.<name>.partial-*`` may then remain).

A folder is filled under a temporary name and renamed whole. POSIX cannot rename a folder over a non-empty one,
so an old target is first renamed aside, then the new one in, and only then is the old one deleted: until
the new folder is complete the old one stays whole under its name.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(target, tag: str = "partial") -> Path:
    """A hidden name beside ``target``, unique to this call: two processes writing one target never meet.

    The unique part is the last suffix, after ``.<name>``: torch.save names the archive inside a file after
    the file's name less its last suffix, so a model's bytes do not depend on the temporary name.
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


@contextmanager
def atomic_path(target) -> Iterator[Path]:
    """``with atomic_path(target) as tmp: write(tmp)``: ``target`` gets what was written to ``tmp``, whole.

    If the block raises, ``target`` is left as it was and ``tmp`` is removed.
    """
    target = Path(target)
    tmp = temporary_name(target)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _sync(target.parent)


@contextmanager
def atomic_directory(target) -> Iterator[Path]:
    """``with atomic_directory(target) as tmp: fill(tmp)``: ``tmp`` (a new empty folder) replaces ``target``.

    If the block raises, ``target`` is left as it was and ``tmp`` is removed.
    """
    target = Path(target)
    tmp = temporary_name(target)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def replace_directory(staged, target) -> Path:
    """Sync the complete folder ``staged`` and rename it to ``target``; an old ``target`` is deleted last.

    For a folder built over a longer time than one ``with`` block (a slide's Zarr store); ``atomic_directory``
    ends with it.
    """
    staged, target = Path(staged), Path(target)
    _sync_tree(staged)
    aside = temporary_name(target, "old")
    try:
        os.rename(target, aside)
    except FileNotFoundError:
        aside = None
    try:
        os.rename(staged, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    _sync(target.parent)
    if aside is not None:
        _remove(aside)
    return target


def _sync(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the names in it durable; some file systems refuse it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if not (path.is_dir() and exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)):
            raise
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    """Every file, then every folder, deepest first: the contents are on disk before the name that holds them."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            _sync(Path(root) / name)
        _sync(Path(root))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
