"""Crafted archives cannot write outside the extraction folder, whatever the interpreter's tarfile.

Each test snapshots every file next to the target folder before extracting and checks afterwards
that nothing outside the target was created or changed. The CVE-2025-4517 archive (a symlink chain
that defeats ``os.path.realpath`` plus a hardlink through it) is the one that Python 3.11.7's
``filter="data"`` lets through.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mopeft.data.datasets.common import PrepareError, PrepareOptions, extract
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.data.synthetic.miniature import read_zip, tar_gz_bytes, write_zip


# ------------------------------------------------------------------------------------- builders
def _tar(path: Path, members: list[tuple[str, str, str | bytes]], gz: bool = False) -> Path:
    """members: (name, kind, link target or content); kind in file/dir/sym/hard/fifo."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
             "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}  # fmt: skip
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            data = extra if kind == "file" else b""
            if kind in ("sym", "hard"):
                info.linkname = str(extra)
            assert isinstance(data, bytes)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def cve_2025_4517_members(dest: Path, up: int = 1) -> list[tuple[str, str, str | bytes]]:
    """The realpath-limit attack: 16 symlinked folder levels whose expansion overflows PATH_MAX, a
    link back up through them that realpath no longer checks, then ``escape`` = ``up`` folders
    above ``dest``; a hardlink to ``escape/flag`` is overwritten and ``escape/newfile`` created."""
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(dest.parent if dest.parent.exists() else "/", "PC_PATH_MAX")
    component = "d" * ((max_path - len(str(dest)) - 1) // (len(steps) + 1))
    members: list[tuple[str, str, str | bytes]] = []
    path = ""
    for s in steps:
        members.append((os.path.join(path, component), "dir", ""))
        members.append((os.path.join(path, s), "sym", component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((linkpath, "sym", os.path.join(*[".."] * len(steps))))
    members.append(("escape", "sym", os.path.join(linkpath, *[".."] * up)))
    members.append(("flaglink", "hard", os.path.join("escape", "flag")))
    members.append(("flaglink", "file", b"overwrite"))
    members.append(("escape/newfile", "file", b"new"))
    return members


def _zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """members: (name, data, unix mode); a symlink's data is its target."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` except below ``skip``: file bytes, or the kind of non-files."""
    out: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == skip or skip in here.parents:
            continue
        for name in [*dirs, *files]:
            p = here / name
            if p == skip:
                continue
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else "other"
    return out


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """(archive folder = tmp_path, dest = tmp_path/out/dest) with a file 'flag' next to dest."""
    dest = tmp_path / "out" / "dest"
    dest.parent.mkdir(parents=True)
    (dest.parent / "flag").write_bytes(b"original")
    (tmp_path / "flag").write_bytes(b"original")
    return tmp_path, dest


def assert_refused(archive: Path, dest: Path, match: str) -> None:
    root = dest.parent.parent
    before = snapshot(root, dest)
    with pytest.raises(PrepareError, match=match) as err:
        extract(archive, dest)
    assert str(archive) in str(err.value)
    assert snapshot(root, dest) == before, "something outside the target was written"
    assert not [p for p in dest.rglob("*") if p.is_file()], "a refused archive must write nothing"


# ---------------------------------------------------------------------------------- CVE-2025-4517
def test_cve_2025_4517_symlink_chain_and_hardlink(box: tuple[Path, Path]) -> None:
    tmp, dest = box
    archive = _tar(tmp / "cve.tar", cve_2025_4517_members(dest))
    assert_refused(archive, dest, r"lies inside symlink 'a'")
    assert (dest.parent / "flag").read_bytes() == b"original"
    assert not (dest.parent / "newfile").exists()


def test_cve_archive_inside_kvasir_zip_writes_nothing_outside(tmp_path: Path) -> None:
    """The issue's scenario: the crafted tar replaces images.tar.gz inside kvasir-instrument.zip;
    its ``escape`` points four folders up: next to the prepared root."""
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    dataset_module("kvasir_instrument").write_miniature(raw)
    (tmp_path / "flag").write_bytes(b"original")
    # where the preparer unpacks the inner tar (the scratch folder has an 8-character random suffix)
    dest = out / ".kvasir_instrument-scratch-XXXXXXXX" / "zip" / "kvasir-instrument"
    crafted = _tar(tmp_path / "crafted.tar", cve_2025_4517_members(dest, up=4))
    members = read_zip(raw / "kvasir-instrument.zip")
    members["kvasir-instrument/images.tar.gz"] = crafted.read_bytes()
    write_zip(raw / "kvasir-instrument.zip", members)
    crafted.unlink()
    before = snapshot(tmp_path, out)
    with pytest.raises(PrepareError, match=r"images\.tar\.gz: member .* lies inside symlink"):
        prepare_dataset("kvasir_instrument", raw, out, PrepareOptions())
    assert snapshot(tmp_path, out) == before
    assert (tmp_path / "flag").read_bytes() == b"original" and not (tmp_path / "newfile").exists()


# ------------------------------------------------------------------------------------- classics
@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([("ok.txt", "file", b"fine"), ("../flag", "file", b"evil")], r"'\.\./flag' escapes"),
        ([("ok.txt", "file", b"fine"), ("a/../../flag", "file", b"evil")], r"escapes"),
        ([("/ABS/flag", "file", b"evil")], r"absolute"),
        (
            [("ok.txt", "file", b"fine"), ("up", "sym", ".."), ("up/flag", "file", b"evil")],
            r"lies inside symlink 'up'",
        ),
        (
            [("ok.txt", "file", b"fine"), ("f", "sym", "../flag")],
            r"link 'f' -> '\.\./flag' leaves the archive",
        ),
        ([("ok.txt", "file", b"fine"), ("f", "sym", "/etc/passwd")], r"absolute"),
        ([("ok.txt", "file", b"fine"), ("h", "hard", "../flag"), ("h", "file", b"evil")], r"occurs twice"),
        (
            [("ok.txt", "file", b"fine"), ("h", "hard", "../flag")],
            r"link 'h' -> '\.\./flag' leaves the archive",
        ),
        ([("ok.txt", "file", b"fine"), ("p", "fifo", b"")], r"special file"),
        ([("a", "sym", "b"), ("b", "sym", "a")], r"more than 32 hops"),
        ([("s", "sym", "missing.txt")], r"reaches nothing"),
    ],
    ids=["dotdot", "dotdot-inner", "absolute", "through-symlink", "symlink-out", "symlink-abs",
         "hardlink-overwrite", "hardlink-out", "fifo", "loop", "dangling"],
)  # fmt: skip
def test_tar_escapes_are_refused_before_anything_is_written(box, members, match) -> None:
    tmp, dest = box
    members = [(n.replace("/ABS", str(dest.parent)), k, e) for n, k, e in members]
    assert_refused(_tar(tmp / "bad.tar", members), dest, match)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([("ok.txt", b"fine", 0o100644), ("../flag", b"evil", 0o100644)], r"escapes"),
        ([("ok.txt", b"fine", 0o100644), ("..\\flag", b"evil", 0o100644)], r"escapes"),
        ([("/ABS/flag", b"evil", 0o100644)], r"absolute"),
        ([("up", b"..", 0o120777), ("up/flag", b"evil", 0o100644)], r"lies inside symlink 'up'"),
        ([("ok.txt", b"fine", 0o100644), ("f", b"../flag", 0o120777)], r"leaves the archive"),
        ([("ok.txt", b"fine", 0o100644), ("dev", b"", 0o020644)], r"special file"),
    ],
    ids=["dotdot", "backslash", "absolute", "through-symlink", "symlink-out", "device"],
)
def test_zip_escapes_are_refused_before_anything_is_written(box, members, match) -> None:
    tmp, dest = box
    members = [(n.replace("/ABS", str(dest.parent)), d, m) for n, d, m in members]
    assert_refused(_zip(tmp / "bad.zip", members), dest, match)


def test_symlink_planted_in_the_target_is_not_followed(box) -> None:
    tmp, dest = box
    dest.mkdir()
    (dest / "images").symlink_to(dest.parent)
    archives = (_tar(tmp / "a.tar", [("images/flag", "file", b"evil")]),
                _zip(tmp / "a.zip", [("images/flag", b"evil", 0o100644)]))  # fmt: skip
    before = snapshot(tmp, dest)
    for archive in archives:
        with pytest.raises(PrepareError, match=r"is a link; not following it"):
            extract(archive, dest)
        assert snapshot(tmp, dest) == before


# ------------------------------------------------------------------------ links inside the archive
def test_links_inside_the_archive_become_copies(tmp_path: Path) -> None:
    members = [("d/f.txt", "file", b"data"), ("s", "sym", "d/f.txt"), ("s2", "sym", "s"),
               ("d/up", "sym", "../s2"), ("h", "hard", "d/f.txt"), ("via", "sym", "dl/f.txt"),
               ("dl", "sym", "d"), ("e", "dir", ""), ("el", "sym", "e")]  # fmt: skip
    for archive in (_tar(tmp_path / "ok.tar", members), _tar(tmp_path / "ok.tgz", members, gz=True)):
        dest = tmp_path / archive.stem
        extract(archive, dest)
        for name in ("d/f.txt", "s", "s2", "d/up", "h", "via"):
            path = dest / name
            assert stat.S_ISREG(os.lstat(path).st_mode), name
            assert path.read_bytes() == b"data"
        # a link to a folder is only followed, never written (the folder itself is extracted)
        assert not (dest / "dl").exists() and not (dest / "el").exists() and (dest / "e").is_dir()


def test_zip_symlink_member_becomes_a_copy_and_data_is_intact(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ok.zip", [("x/a.bin", bytes(range(256)) * 9, 0o100644), ("l", b"x/a.bin", 0o120777)]
    )
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "l").read_bytes() == bytes(range(256)) * 9
    assert not (tmp_path / "out" / "l").is_symlink()


def test_password_zip_and_plain_tar_gz_still_extract(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    dataset_module("foodseg103").write_miniature(raw)
    extract(raw / "FoodSeg103.zip", tmp_path / "food", password="LARCdataset9947")
    assert (
        tmp_path / "food" / "FoodSeg103" / "ImageSets" / "test.txt"
    ).read_bytes() == b"00000048.jpg\n00000049.jpg\n"
    with pytest.raises(PrepareError, match=r"FoodSeg103\.zip: cannot extract"):
        extract(raw / "FoodSeg103.zip", tmp_path / "nopw")
    (tmp_path / "t.tar.gz").write_bytes(tar_gz_bytes({"a/b.txt": b"x", "./c.txt": b"y"}))
    extract(tmp_path / "t.tar.gz", tmp_path / "t")
    assert (tmp_path / "t" / "a" / "b.txt").read_bytes() == b"x" and (
        tmp_path / "t" / "c.txt"
    ).read_bytes() == b"y"
