"""Zip and tar extraction that no archive can steer outside its folder.

Python's ``tarfile`` extraction filter was bypassable up to 3.11.12 / 3.12.10 (CVE-2025-4517: a
chain of symlinks long enough that ``os.path.realpath`` gives up, then a hardlink through it), and
the raw archives of a benchmark come from many hands. So nothing here relies on the interpreter's
filter, and nothing here ever creates a link on disk:

* every member name must be relative, without ``..``, and must not pass *through* another link;
* links are resolved inside the archive's own list of members (never on disk) and written as a
  copy of the regular file they reach (a link to a folder is skipped: the folder is extracted
  anyway); a link that leaves the archive, loops or reaches nothing is refused;
* devices, FIFOs and duplicate names are refused;
* a seekable archive is checked completely before its first byte is written;
* folders are created one component at a time and files opened with ``O_NOFOLLOW``, so even a
  symlink planted in the target beforehand is refused rather than followed.

Every refusal is a :class:`PrepareError` naming the archive and the member.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from mopeft.data.errors import PrepareError

Kind = Literal["file", "dir", "symlink", "hardlink"]
MAX_LINK_HOPS = 32  # longer chains are refused (real archives have none; a cycle would never end)
_CHUNK = 1 << 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One archive member as the extractor sees it: a normalised name, its kind, a link target."""

    name: str
    kind: Kind
    target: str = ""  # symlink: relative to the link's folder; hardlink: relative to the archive root
    open: Callable[[], IO[bytes]] | None = None  # regular files: their content


def normalise(name: str, archive: Path) -> str:
    """The member name as a relative POSIX path without ``.`` parts ("" for the archive root).

    Backslashes count as separators (some Windows zippers write them), so ``..\\x`` is caught too.
    """
    raw = name.replace("\\", "/")
    if raw.startswith("/") or "\x00" in raw:
        raise PrepareError(f"{archive}: member {name!r} has an absolute or invalid path; refusing to extract")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PrepareError(f"{archive}: member {name!r} escapes the extraction folder ('..'); refusing")
    return "/".join(parts)


def _prefixes(name: str) -> Iterator[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class Plan:
    """The checked member table of one archive, and the links still to be written as copies."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.members: dict[str, Member] = {}
        self.parents: set[str] = set()  # folders implied by member names

    def add(self, member: Member) -> Member | None:
        """Check ``member`` against those seen so far; None for the archive root entry."""
        if not member.name:
            if member.kind != "dir":
                raise PrepareError(f"{self.archive}: a {member.kind} member has an empty name; refusing")
            return None
        name = member.name
        if name in self.members:
            if member.kind == "dir" and self.members[name].kind == "dir":
                return None
            raise PrepareError(f"{self.archive}: member {name!r} occurs twice; refusing to extract")
        for prefix in _prefixes(name):
            other = self.members.get(prefix)
            if other is not None and other.kind != "dir":
                raise PrepareError(
                    f"{self.archive}: member {name!r} lies inside {other.kind} {prefix!r}; refusing"
                )
        if member.kind != "dir" and name in self.parents:
            raise PrepareError(f"{self.archive}: {member.kind} {name!r} is also a folder of other members")
        self.parents.update(_prefixes(name))
        self.members[name] = member
        return member

    def resolve(self, member: Member) -> str:
        """The regular-file member that link ``member`` reaches, following links in the table only
        ("" for a link to a folder, which is not written: its target folder is extracted anyway)."""
        base = posixpath.dirname(member.name) if member.kind == "symlink" else ""
        return self._follow(member, base, member.target, hops=1)

    def _follow(self, link: Member, base: str, target: str, hops: int) -> str:
        where = f"{self.archive}: link {link.name!r}"
        if hops > MAX_LINK_HOPS:
            raise PrepareError(f"{where}: more than {MAX_LINK_HOPS} hops; refusing")
        if not target or target.startswith("/") or "\\" in target:
            raise PrepareError(f"{where} -> {target!r} is absolute or empty; refusing")
        todo = [p for p in (base.split("/") if base else []) + target.split("/") if p not in ("", ".")]
        done: list[str] = []
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not done:
                    raise PrepareError(f"{where} -> {target!r} leaves the archive; refusing")
                done.pop()
                continue
            done.append(part)
            hit = self.members.get("/".join(done))
            if hit is not None and hit.kind in ("symlink", "hardlink"):
                base = "/".join(done[:-1]) if hit.kind == "symlink" else ""
                rest = "/".join(todo)
                return self._follow(link, base, f"{hit.target}/{rest}" if rest else hit.target, hops + 1)
        name = "/".join(done)
        final = self.members.get(name)
        if final is not None and final.kind == "file":
            return final.name
        if (final is not None and final.kind == "dir") or name in self.parents or not name:
            return ""  # a link to a folder: the folder itself is extracted, the link is skipped
        raise PrepareError(f"{where} -> {target!r} reaches nothing in the archive; refusing")


# ------------------------------------------------------------------------------------------ writing
class _Writer:
    """Writes checked members below ``root``, creating folders one by one and following no link."""

    def __init__(self, root: Path, archive: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.archive = archive

    def folder(self, name: str) -> Path:
        path = self.root
        for part in name.split("/") if name else ():
            path = path / part
            if path.is_symlink():
                raise PrepareError(f"{self.archive}: member {name!r}: {path} is a link; not following it")
            if not path.is_dir():
                path.mkdir()
        return path

    def file(self, name: str, src: IO[bytes]) -> None:
        folder, _, base = name.rpartition("/")
        path = self.folder(folder) / base
        if path.is_symlink() or path.is_dir():
            raise PrepareError(f"{self.archive}: member {name!r}: {path} exists as a link or folder")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def copy(self, name: str, of: str) -> None:
        fd = os.open(self.root / of, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src:
            self.file(name, src)


def _write(writer: _Writer, member: Member) -> None:
    if member.kind == "dir":
        writer.folder(member.name)
    elif member.kind == "file" and member.open is not None:
        with member.open() as src:
            writer.file(member.name, src)


def write_checked(members: Iterable[Member], dest: Path, archive: Path, *, streamed: bool = False) -> None:
    """Check ``members`` and write them below ``dest`` (links as copies of the file they reach).

    A seekable archive (``streamed=False``) is checked completely before anything is written; a
    stream (a pipe from an external tool) is checked member by member as it is written, which still
    never writes outside ``dest`` because no link is ever created.
    """
    plan = Plan(archive)
    writer = _Writer(dest, archive)
    kept: list[Member] = []
    for member in members:
        if (checked := plan.add(member)) is None:
            continue
        if streamed:
            _write(writer, checked)
        kept.append(checked)
    links = [(m, plan.resolve(m)) for m in kept if m.kind in ("symlink", "hardlink")]
    if not streamed:
        for member in kept:
            _write(writer, member)
    for link, target in links:
        if target:
            writer.copy(link.name, target)
        else:
            log.info("%s: link %r points at a folder; not written", archive, link.name)


# ------------------------------------------------------------------------------------------ formats
def _zip_members(zf: zipfile.ZipFile, archive: Path, pwd: bytes | None) -> list[Member]:
    out = []
    for info in zf.infolist():
        name = normalise(info.filename, archive)
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3 = Unix mode bits
        kind = stat.S_IFMT(mode)
        if info.is_dir() or kind == stat.S_IFDIR:
            out.append(Member(name, "dir"))
        elif kind == stat.S_IFLNK:
            target = zf.read(info, pwd=pwd).decode("utf-8", "surrogateescape")
            out.append(Member(name, "symlink", target))
        elif kind in (0, stat.S_IFREG):
            out.append(Member(name, "file", open=lambda info=info: zf.open(info, pwd=pwd)))
        else:
            raise PrepareError(f"{archive}: member {info.filename!r} is a special file; refusing")
    return out


def _tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo, archive: Path) -> Member:
    name = normalise(info.name, archive)
    if info.isdir():
        return Member(name, "dir")
    if info.issym():
        return Member(name, "symlink", info.linkname)
    if info.islnk():
        return Member(name, "hardlink", info.linkname)  # resolved (and checked) inside the archive
    if info.isreg():
        return Member(name, "file", open=lambda: tf.extractfile(info))  # type: ignore[return-value]
    raise PrepareError(f"{archive}: member {info.name!r} is a device, FIFO or other special file; refusing")


def extract_zip(archive: Path, dest: Path, password: str | None = None) -> None:
    pwd = password.encode() if password else None
    try:
        with zipfile.ZipFile(archive) as zf:
            write_checked(_zip_members(zf, archive, pwd), dest, archive)
    except RuntimeError as exc:  # zipfile: encrypted member without (the right) password
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None


def extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        write_checked([_tar_member(tf, info, archive) for info in tf.getmembers()], dest, archive)


def extract_tar_stream(stream: IO[bytes], dest: Path, shown_as: Path) -> None:
    """A tar arriving on a pipe (an external tool converting another format), checked as it comes."""
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        write_checked((_tar_member(tf, info, shown_as) for info in tf), dest, shown_as, streamed=True)
