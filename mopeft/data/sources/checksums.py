"""File checksums and the one rule for whether a raw file is the published one.

Used both when a file is downloaded (before it is moved into the cache) and when it is prepared
(before anything is extracted), so a re-issued archive is judged the same way in both places.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from mopeft.data.spec import Source

CHUNK = 1 << 20


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def checksum_problem(path: Path, src: Source, sha256: str | None = None) -> str | None:
    """None when ``path`` matches ``src``'s sha256 (if any) and one of its md5s (if any), else a
    message naming the file. ``sha256`` may pass the file's digest when the caller has it already."""
    if src.sha256:
        got = sha256 or file_digest(path, "sha256")
        if got != src.sha256.lower():
            return f"{path}: sha256 {got} does not match the expected {src.sha256}"
    if md5s := src.md5s:
        got = file_digest(path, "md5")
        if got not in {m.lower() for m in md5s}:
            expected = md5s[0] if len(md5s) == 1 else f"one of {', '.join(md5s)}"
            return f"{path}: md5 {got} does not match the expected {expected}"
    return None


def is_commit(ref: str | None) -> bool:
    return bool(ref and re.fullmatch(r"[0-9a-f]{40}", ref))


def git_head(repo: Path) -> str | None:
    """The commit checked out in ``repo`` (None if it is not a git work tree, e.g. a manual copy)."""
    if not (repo / ".git").exists():
        return None
    res = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None
