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
  symlink planted in the target beforehand is refused rather than followed;
* what an archive may write is bounded (:class:`ExtractLimits`): in all, and as a multiple of the
  archive's own size, so a zip bomb cannot fill the disk that holds the raw data. The sizes the
  archive declares (links counted as the copies they become) are checked before extraction, and
  the bytes actually written are counted as they are written, because a member may lie about
  its size.

Every refusal is a :class:`PrepareError` naming the archive and the member.
"""

from __future__ import annotations

import logging
import os
import posixpath
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
GB = 10**9
# Default limits, overridable by these environment variables (docs/datasets.md). The largest raw
# archive of the registry is a few tens of GB (FloodNet, the iSAID/DOTA parts, FAIR-1M); images
# and masks are already compressed, so real archives expand by about 1-3x. 200 GB in all and
# 1000:1 (about deflate's maximum) leave room for every real archive and stop a bomb early.
MAX_GB_ENV = "MOPEFT_MAX_EXTRACT_GB"
MAX_RATIO_ENV = "MOPEFT_MAX_EXTRACT_RATIO"
DEFAULT_MAX_GB = 200.0
DEFAULT_MAX_RATIO = 1000.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One archive member as the extractor sees it: a normalised name, its kind, a link target."""

    name: str
    kind: Kind
    target: str = ""  # symlink: relative to the link's folder; hardlink: relative to the archive root
    open: Callable[[], IO[bytes]] | None = None  # regular files: their content
    size: int | None = None  # regular files: the uncompressed size the archive declares (None: unknown)


def _human(n: float) -> str:
    """``n`` bytes in decimal units, as disks and the limits are quoted."""
    for unit, scale in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also refuses nan
        raise PrepareError(
            f"environment variable {name}={raw!r}: a positive number is needed (default {default:g})"
        )
    return value


@dataclass(frozen=True)
class ExtractLimits:
    """How much one archive may write: ``max_bytes`` in all, and at most ``max_ratio`` times the
    archive's own size. Why both: the total protects the disk whatever the archive; the ratio
    stops a small bomb long before the total is reached (real archives of images expand ~1-3x)."""

    max_bytes: int = int(DEFAULT_MAX_GB * GB)
    max_ratio: float = DEFAULT_MAX_RATIO

    @classmethod
    def from_env(cls) -> ExtractLimits:
        """The defaults, or ``$MOPEFT_MAX_EXTRACT_GB`` (GB, decimal) / ``$MOPEFT_MAX_EXTRACT_RATIO``."""
        return cls(
            max_bytes=int(_env_number(MAX_GB_ENV, DEFAULT_MAX_GB) * GB),
            max_ratio=_env_number(MAX_RATIO_ENV, DEFAULT_MAX_RATIO),
        )

    def check(self, total: int, archive: Path, archive_bytes: int, declared: bool) -> None:
        """Refuse ``total`` uncompressed bytes from an ``archive_bytes`` archive over either limit."""
        what = "declares" if declared else "writes at least"
        if total > self.max_bytes:
            raise PrepareError(
                f"{archive}: {what} {_human(total)} uncompressed, over the extraction limit of "
                f"{_human(self.max_bytes)}; if the archive is genuine, raise the limit with "
                f"{MAX_GB_ENV}=<GB> (now {self.max_bytes / GB:g})"
            )
        if total > self.max_ratio * max(archive_bytes, 1):
            raise PrepareError(
                f"{archive}: {what} {_human(total)} uncompressed from {_human(archive_bytes)} "
                f"(over the limit of {self.max_ratio:g}:1; a zip bomb?); if the archive is genuine, "
                f"raise the limit with {MAX_RATIO_ENV}=<ratio> (now {self.max_ratio:g})"
            )


class Budget:
    """The bytes written so far from one archive, against its :class:`ExtractLimits`."""

    def __init__(self, limits: ExtractLimits | None, archive: Path, archive_bytes: int) -> None:
        self.limits = limits or ExtractLimits.from_env()
        self.archive = archive
        self.archive_bytes = archive_bytes
        self.written = 0

    def declared(self, total: int) -> None:
        """Check the archive's declared total before anything is written."""
        self.limits.check(total, self.archive, self.archive_bytes, declared=True)

    def spend(self, n: int) -> None:
        self.written += n
        self.limits.check(self.written, self.archive, self.archive_bytes, declared=False)


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
    """Writes checked members below ``root``, creating folders one by one and following no link,
    and counts every byte against the archive's :class:`Budget`."""

    def __init__(self, root: Path, archive: Path, budget: Budget) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.archive = archive
        self.budget = budget

    def folder(self, name: str) -> Path:
        path = self.root
        for part in name.split("/") if name else ():
            path = path / part
            if path.is_symlink():
                raise PrepareError(f"{self.archive}: member {name!r}: {path} is a link; not following it")
            if not path.is_dir():
                path.mkdir()
        return path

    def file(self, name: str, src: IO[bytes], size: int | None = None) -> None:
        """Copy ``src`` to member ``name``; more than its declared ``size`` is refused mid-copy."""
        folder, _, base = name.rpartition("/")
        path = self.folder(folder) / base
        if path.is_symlink() or path.is_dir():
            raise PrepareError(f"{self.archive}: member {name!r}: {path} exists as a link or folder")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        written = 0
        with os.fdopen(fd, "wb") as dst:
            while block := src.read(_CHUNK):
                written += len(block)
                if size is not None and written > size:
                    raise PrepareError(
                        f"{self.archive}: member {name!r} holds more than the {size} bytes it "
                        "declares (a forged header?); refusing"
                    )
                self.budget.spend(len(block))
                dst.write(block)

    def copy(self, name: str, of: str) -> None:
        fd = os.open(self.root / of, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src:
            self.file(name, src)


def _write(writer: _Writer, member: Member) -> None:
    if member.kind == "dir":
        writer.folder(member.name)
    elif member.kind == "file" and member.open is not None:
        with member.open() as src:
            writer.file(member.name, src, member.size)


def write_checked(
    members: Iterable[Member], dest: Path, archive: Path, budget: Budget, *, streamed: bool = False
) -> None:
    """Check ``members`` and write them below ``dest`` (links as copies of the file they reach).

    A seekable archive (``streamed=False``) is checked completely before anything is written, its
    declared sizes included (each link counts as a copy of the file it reaches: a thousand hard
    links to one large file write it a thousand times); a stream (a pipe from an external tool) is
    checked member by member as it is written, which still never writes outside ``dest`` because
    no link is ever created. Either way the bytes written are counted against ``budget``.
    """
    plan = Plan(archive)
    writer = _Writer(dest, archive, budget)
    kept: list[Member] = []
    for member in members:
        if (checked := plan.add(member)) is None:
            continue
        if streamed:
            _write(writer, checked)
        kept.append(checked)
    links = [(m, plan.resolve(m)) for m in kept if m.kind in ("symlink", "hardlink")]
    if not streamed:
        sizes = [m.size or 0 for m in kept if m.kind == "file"]
        sizes += [plan.members[target].size or 0 for _, target in links if target]
        budget.declared(sum(sizes))
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
            opener = lambda info=info: zf.open(info, pwd=pwd)  # noqa: E731
            out.append(Member(name, "file", open=opener, size=info.file_size))
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
        return Member(name, "file", open=lambda: tf.extractfile(info), size=info.size)  # type: ignore[return-value]
    raise PrepareError(f"{archive}: member {info.name!r} is a device, FIFO or other special file; refusing")


def check_zip_sizes(archive: Path, limits: ExtractLimits | None = None) -> None:
    """Refuse a zip whose declared sizes exceed ``limits``, for callers that hand the zip to an
    external tool (FoodSeg103's ``unzip -P``) and so cannot count what is written."""
    with zipfile.ZipFile(archive) as zf:
        total = sum(info.file_size for info in zf.infolist())
    Budget(limits, archive, archive.stat().st_size).declared(total)


def extract_zip(
    archive: Path, dest: Path, password: str | None = None, limits: ExtractLimits | None = None
) -> None:
    pwd = password.encode() if password else None
    budget = Budget(limits, archive, archive.stat().st_size)
    try:
        with zipfile.ZipFile(archive) as zf:
            write_checked(_zip_members(zf, archive, pwd), dest, archive, budget)
    except RuntimeError as exc:  # zipfile: encrypted member without (the right) password
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None


def extract_tar(archive: Path, dest: Path, limits: ExtractLimits | None = None) -> None:
    budget = Budget(limits, archive, archive.stat().st_size)
    with tarfile.open(archive) as tf:
        write_checked([_tar_member(tf, info, archive) for info in tf.getmembers()], dest, archive, budget)


def extract_tar_stream(stream: IO[bytes], dest: Path, shown_as: Path, budget: Budget) -> None:
    """A tar arriving on a pipe (an external tool converting another format), checked as it comes;
    ``budget`` is that of the archive the tool reads (its size is what the ratio is taken of)."""
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        members = (_tar_member(tf, info, shown_as) for info in tf)
        write_checked(members, dest, shown_as, budget, streamed=True)
