"""Extraction is bounded: an archive may write at most MOPEFT_MAX_EXTRACT_GB in all and at most
MOPEFT_MAX_EXTRACT_RATIO times its own size, checked on the declared sizes before anything is
written and on the bytes actually written (a member may lie about its size)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_rar_tools import env, fake_7z  # noqa: F401 (env is a fixture)

from mopeft.data.datasets.common import PrepareError, extract
from mopeft.data.sources.archive import (
    GB,
    Budget,
    ExtractLimits,
    Member,
    check_zip_sizes,
    extract_tar_stream,
    write_checked,
)

MB = 10**6


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    bomb = zip_of(tmp_path / "bomb.zip", {"zeros.bin": bytes(MB)})  # 1 MB of zeros: about 1 kB
    assert bomb.stat().st_size < 5000
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_GB", "0.0005")  # 500 kB
    with pytest.raises(PrepareError) as err:
        extract(bomb, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(f"{bomb}: declares 1 MB uncompressed, over the extraction limit of 500 kB"), msg
    assert "raise the limit with MOPEFT_MAX_EXTRACT_GB=<GB> (now 0.0005)" in msg
    assert not any((tmp_path / "out").iterdir())


def test_the_ratio_limit_refuses_a_small_archive_that_expands_too_much(tmp_path, monkeypatch):
    bomb = zip_of(tmp_path / "bomb.zip", {"zeros.bin": bytes(MB)})
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_RATIO", "100")
    with pytest.raises(PrepareError) as err:
        extract(bomb, tmp_path / "out")
    ratio_msg = str(err.value)
    assert (
        "(over the limit of 100:1; a zip bomb?)" in ratio_msg
        and "MOPEFT_MAX_EXTRACT_RATIO=<ratio>" in ratio_msg
    )
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_RATIO", "5000")  # raised as the message says: it extracts
    assert (extract(bomb, tmp_path / "ok") / "zeros.bin").read_bytes() == bytes(MB)


def test_a_normal_archive_extracts_under_a_low_limit(tmp_path):
    data = {"a/x.txt": b"hello", "a/b/y.bin": bytes(range(256)) * 40}
    archive = zip_of(tmp_path / "fine.zip", data)
    limits = ExtractLimits(max_bytes=20_000, max_ratio=50)
    out = extract(archive, tmp_path / "out", limits=limits)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == data


def test_the_defaults_and_a_bad_setting(monkeypatch):
    assert ExtractLimits.from_env() == ExtractLimits(max_bytes=200 * GB, max_ratio=1000.0)
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_GB", "lots")
    with pytest.raises(PrepareError, match=r"MOPEFT_MAX_EXTRACT_GB='lots': a positive number is needed"):
        ExtractLimits.from_env()


def test_hard_links_count_as_the_copies_they_become(tmp_path):
    """100 kB of data and 20 hard links to it write 2.1 MB: refused with a 1 MB limit although the
    regular members alone declare 100 kB."""
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("big.bin")
        info.size = 100_000
        tf.addfile(info, io.BytesIO(bytes(100_000)))
        for i in range(20):
            link = tarfile.TarInfo(f"copy{i}.bin")
            link.type, link.linkname = tarfile.LNKTYPE, "big.bin"
            tf.addfile(link)
    with pytest.raises(
        PrepareError, match=r"links\.tar: declares 2\.1 MB uncompressed, over the extraction limit of 1 MB"
    ):
        extract(path, tmp_path / "out", limits=ExtractLimits(max_bytes=MB))
    assert not any((tmp_path / "out").iterdir())
    assert len(list(extract(path, tmp_path / "ok", limits=ExtractLimits(max_bytes=3 * MB)).iterdir())) == 21


def test_a_member_that_writes_more_than_it_declares_is_stopped(tmp_path):
    archive = tmp_path / "forged.zip"
    liar = Member("a.bin", "file", open=lambda: io.BytesIO(bytes(5000)), size=10)
    budget = Budget(ExtractLimits(), archive, archive_bytes=1000)
    with pytest.raises(
        PrepareError, match=r"forged\.zip: member 'a\.bin' holds more than the 10 bytes it declares"
    ):
        write_checked([liar], tmp_path / "out", archive, budget)


def test_a_stream_is_counted_as_it_is_written(tmp_path):
    """No sizes to check up front (a tar on a pipe): the running total stops it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"part{i}.bin")
            info.size = 400_000
            tf.addfile(info, io.BytesIO(bytes(400_000)))
    buf.seek(0)
    shown = tmp_path / "in.rar"
    budget = Budget(ExtractLimits(max_bytes=MB), shown, archive_bytes=10 * MB)
    with pytest.raises(
        PrepareError,
        match=r"in\.rar: writes at least 1\.2 MB uncompressed, over the extraction limit of 1 MB;",
    ):
        extract_tar_stream(buf, tmp_path / "out", shown, budget)


def test_external_unzip_gets_the_declared_size_check(tmp_path):
    bomb = zip_of(tmp_path / "bomb.zip", {"zeros.bin": bytes(MB)})
    with pytest.raises(PrepareError, match=r"over the extraction limit of 100 kB"):
        check_zip_sizes(bomb, ExtractLimits(max_bytes=100_000))
    check_zip_sizes(bomb, ExtractLimits())


def test_a_rar_tools_listing_over_the_limit_stops_before_it_writes(env, tmp_path, monkeypatch):  # noqa: F811
    bin_dir, archive = env
    fake_7z(bin_dir, "7z")  # lists a 4-byte member and writes b"data"
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_RATIO", "0.01")  # the RAR is 72 bytes: at most 0.72 bytes
    with pytest.raises(PrepareError, match=r"in\.rar: declares 4 bytes uncompressed from 72 bytes"):
        extract(archive, tmp_path / "out")
    assert (bin_dir / "calls.log").read_text().splitlines() == ["7z l"]


def test_what_a_rar_tool_wrote_is_counted(env, tmp_path, monkeypatch):  # noqa: F811
    """A listing without sizes (or with false ones) does not help: the written files are summed."""
    bin_dir, archive = env
    fake_7z(bin_dir, "7z")
    listing = (bin_dir / "7z").read_text().replace("Size = 4\\n", "")
    assert "Size = 4" not in listing
    (bin_dir / "7z").write_text(listing)
    monkeypatch.setenv("MOPEFT_MAX_EXTRACT_RATIO", "0.01")
    with pytest.raises(PrepareError, match=r"in\.rar: writes at least 4 bytes uncompressed from 72 bytes"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
