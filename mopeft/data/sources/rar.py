"""RAR archives, which Python cannot read, unpacked by whichever installed tool works.

DRAM ships a RAR inside its zip. Tools are tried in turn: one that is missing or fails (an
``unrar`` that is really unrar-free, a 7-Zip built without RAR) hands over to the next, and when
none works the error lists what each one did and what to install. None of them is trusted with
the target folder:

* ``bsdtar`` (libarchive, in ``envs/mopeft.yaml``) only *reads* the RAR: it rewrites it as a tar
  stream on a pipe, which :func:`mopeft.data.sources.archive.extract_tar_stream` checks and writes itself;
* ``unrar``, ``unar`` and 7-Zip write files themselves, so the tool's own listing is checked first
  (relative names, no ``..``, no links, no special files), the tool unpacks into an empty private
  folder, and that folder is scanned (regular files and folders only) before its content is moved
  into the target.

Either way the extraction limits of :class:`mopeft.data.sources.archive.ExtractLimits` hold: the tar stream
is counted as it is written; for the other tools the sizes in their listing are checked before
they run and what they wrote is summed before it is moved into the target.

A refused member stops everything (another tool would read the same archive); a tool failure
only moves on to the next tool.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mopeft.data.errors import PrepareError
from mopeft.data.sources.archive import Budget, ExtractLimits, Member, Plan, extract_tar_stream, normalise

RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")  # RAR 1.5-4.x, RAR 5
INSTALL_HINT = (
    "install one of: bsdtar (conda-forge 'libarchive', part of envs/mopeft.yaml; Debian/Ubuntu "
    "'libarchive-tools'), unrar (Debian non-free 'unrar'), unar (Debian/Ubuntu 'unar'), "
    "7-Zip with RAR support (Debian/Ubuntu '7zip')"
)


class ToolFailed(Exception):
    """The tool could not read this archive (or is not the tool its name suggests): try the next."""


def is_rar(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(RAR_MAGIC)


def _run(argv: list[str], timeout: float = 3600) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolFailed(str(exc)) from None
    if res.returncode != 0:
        raise ToolFailed(f"exit {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}")
    return res.stdout


# ------------------------------------------------------------------------------ listings (the gate)
def _blocks(text: str, sep: str) -> list[dict[str, str]]:
    """``key<sep>value`` lines grouped into blank-line separated blocks (7-Zip -slt, unrar lt)."""
    blocks, cur = [], {}
    for line in [*text.splitlines(), ""]:
        key, found, value = line.strip().partition(sep.strip())
        if found and key:
            cur[key.strip()] = value.strip()
        elif not line.strip() and cur:
            blocks.append(cur)
            cur = {}
    return blocks


Entry = tuple[str, bool, str, int]  # (name, is_dir, problem, declared size; 0 where not listed)


def _size(text: str | None) -> int:
    """A listing's size field as bytes (0 when absent or unreadable: the scan still counts it)."""
    try:
        return max(0, int(str(text).split()[0]))
    except (ValueError, IndexError):
        return 0


def _check_listing(entries: list[Entry], archive: Path, tool: str, budget: Budget) -> None:
    """``(name, is_dir, problem, size)`` per member: names must be safe, no member a link or device,
    and the declared sizes within the extraction limits."""
    if not entries:
        raise ToolFailed("listed no members")
    plan = Plan(archive)
    for name, is_dir, problem, _ in entries:
        if problem:
            raise PrepareError(f"{archive}: member {name!r} is {problem} ({tool}'s listing); refusing")
        plan.add(Member(normalise(name, archive), "dir" if is_dir else "file"))
    budget.declared(sum(size for _, is_dir, _, size in entries if not is_dir))


def _list_7z(exe: str, archive: Path) -> list[Entry]:
    text = _run([exe, "l", "-slt", str(archive)])
    if "\n----------" not in text:
        raise ToolFailed("no member listing")
    out = []
    for b in _blocks(text.split("\n----------", 1)[1], " = "):
        if "Path" not in b:
            continue
        mode = (b.get("Mode") or b.get("Attributes", "")).split()[-1:] or [""]
        unix = mode[0][:1] if mode[0][:1] in "-dlcbps" and len(mode[0]) == 10 else ""
        link = b.get("Symbolic Link") or b.get("Hard Link") or b.get("Link") or unix == "l"
        special = unix in ("c", "b", "p", "s")
        problem = "a link" if link else "a special file" if special else ""
        out.append((b["Path"], b.get("Folder") == "+" or unix == "d", problem, _size(b.get("Size"))))
    return out


def _list_unrar(exe: str, archive: Path) -> list[Entry]:
    out = []
    for b in _blocks(_run([exe, "lt", "-idc", str(archive)]), ": "):
        if "Name" not in b or "Type" not in b:
            continue
        kind = b["Type"].lower()
        problem = "" if kind in ("file", "directory") else f"a {kind}"
        out.append((b["Name"], kind == "directory", problem, _size(b.get("Size"))))
    return out


def _list_lsar(exe: str, archive: Path) -> list[Entry]:
    lsar = shutil.which("lsar")
    if lsar is None:
        raise ToolFailed("its lister 'lsar' is not installed")
    try:
        contents = json.loads(_run([lsar, "-j", str(archive)])).get("lsarContents", [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ToolFailed(f"unreadable lsar listing ({exc})") from None
    out = []
    for e in contents:
        link = e.get("XADIsLink") or e.get("XADIsHardLink") or "XADLinkDestination" in e
        special = any(e.get(k) for k in ("XADIsCharacterDevice", "XADIsBlockDevice", "XADIsFIFO"))
        problem = "a link" if link else "a special file" if special else ""
        name, is_dir = str(e.get("XADFileName", "")), bool(e.get("XADIsDirectory"))
        out.append((name, is_dir, problem, _size(e.get("XADFileSize"))))
    return out


# ---------------------------------------------------------------------------------------- tools
@dataclass(frozen=True)
class Tool:
    exe: str
    listing: Callable[[str, Path], list[Entry]] | None  # None: streams a tar
    argv: Callable[[str, Path, Path], list[str]]


def _unar_argv(exe: str, archive: Path, dest: Path) -> list[str]:
    # -D: no extra containing folder; -nr: do not unpack archives inside the archive; -k skip: no forks
    return [exe, "-q", "-f", "-D", "-nr", "-k", "skip", "-o", str(dest), str(archive)]


TOOLS = (
    Tool("bsdtar", None, lambda exe, a, d: [exe, "-c", "-f", "-", "--format", "pax", f"@{a}"]),
    Tool("unrar", _list_unrar, lambda exe, a, d: [exe, "x", "-o+", "-idq", "-y", str(a), f"{d}/"]),
    Tool("unar", _list_lsar, _unar_argv),
    Tool("7z", _list_7z, lambda exe, a, d: [exe, "x", "-y", f"-o{d}", str(a)]),
    Tool("7zz", _list_7z, lambda exe, a, d: [exe, "x", "-y", f"-o{d}", str(a)]),
)


def _stream(exe: str, tool: Tool, archive: Path, staging: Path, shown_as: Path, budget: Budget) -> None:
    """Run a converting tool and check + write the tar it prints; a cut stream is a tool failure."""
    with tempfile.TemporaryFile() as err:

        def failure(rc: int, fallback: str) -> ToolFailed:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()[-300:]
            return ToolFailed(f"exit {rc}: {text}" if rc else fallback)

        proc = subprocess.Popen(tool.argv(exe, archive, staging), stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            extract_tar_stream(proc.stdout, staging, shown_as, budget)
        except PrepareError:
            proc.kill()
            proc.wait()
            raise
        except Exception as exc:  # the tool stopped early: its exit status and stderr say why
            proc.stdout.close()
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            raise failure(rc, f"unreadable output ({exc})") from None
        proc.stdout.close()
        if rc := proc.wait():
            raise failure(rc, "")


def _scan(staging: Path, archive: Path, tool: str, budget: Budget) -> None:
    """After a tool wrote files itself: only regular files and folders may be there, and no more
    bytes than the limits allow (the listing may have understated them)."""
    for folder, dirs, files in os.walk(staging):
        for name in [*dirs, *files]:
            info = os.lstat(Path(folder) / name)
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                rel = (Path(folder) / name).relative_to(staging)
                raise PrepareError(f"{archive}: {tool} wrote {rel} as a link or special file; refusing")
            if stat.S_ISREG(info.st_mode):
                budget.spend(info.st_size)


def _move_into(staging: Path, dest: Path, archive: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staging.iterdir()):
        if (dest / entry.name).exists() or (dest / entry.name).is_symlink():
            raise PrepareError(f"{archive}: {dest / entry.name} already exists; extract into an empty folder")
        os.replace(entry, dest / entry.name)


def extract_rar(
    archive: Path, dest: Path, shown_as: Path | None = None, limits: ExtractLimits | None = None
) -> str:
    """Unpack ``archive`` into ``dest`` with the first tool that works; return that tool's name."""
    shown_as = shown_as or archive
    limits = limits or ExtractLimits.from_env()
    failures = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        exe = shutil.which(tool.exe)
        if exe is None:
            failures.append(f"{tool.exe}: not installed")
            continue
        with tempfile.TemporaryDirectory(prefix=".rar-", dir=dest.parent) as tmp:
            staging = Path(tmp)
            budget = Budget(limits, shown_as, archive.stat().st_size)  # afresh for each tool
            try:
                if tool.listing is None:
                    _stream(exe, tool, archive, staging, shown_as, budget)
                else:
                    _check_listing(tool.listing(exe, archive), shown_as, tool.exe, budget)
                    _run(tool.argv(exe, archive, staging))
                    _scan(staging, shown_as, tool.exe, budget)
            except ToolFailed as exc:
                failures.append(f"{tool.exe}: {exc}")
                continue
            _move_into(staging, dest, shown_as)
        return tool.exe
    tried = "; ".join(failures)
    raise PrepareError(f"{shown_as}: cannot unpack RAR {archive.name} ({tried}); {INSTALL_HINT}")
