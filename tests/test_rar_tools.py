"""RAR extraction through external tools, with stand-in tools on an otherwise empty PATH.

No free tool writes RAR, so the archive is a RAR signature plus junk and the "tools" are small
scripts that behave like bsdtar / unrar / unar / 7-Zip (including the ways they fail or lie); the
tests check the order in which tools are tried, what a failure hands on, and that neither a tool's
listing nor what it writes can put anything outside the target.
"""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from mopeft.data.datasets.common import PrepareError, PrepareOptions, extract
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.data.synthetic.miniature import read_zip, write_zip

RAR5 = b"Rar!\x1a\x07\x01\x00" + bytes(range(64))

# A 7-Zip ``l -slt`` listing (shape as printed by 7-Zip 26) of DRAM-like content.
LISTING_7Z = """
7-Zip (z) 26.02 (x64) : Copyright (c) 1999-2026 Igor Pavlov : 2026-06-25

Listing archive: {archive}

--
Path = {archive}
Type = Rar5

----------
Path = DRAM_processed
Folder = +
Attributes = D_ drwxr-xr-x

Path = {member}
Folder = -
Size = 4
Attributes = A_ -rw-r--r--
"""


def tool(bin_dir: Path, name: str, body: str) -> None:
    """An executable ``name`` in ``bin_dir`` that logs its argv to calls.log, then runs ``body``."""
    script = bin_dir / name
    log_file = str(bin_dir / "calls.log")
    log = f"with open({log_file!r}, 'a') as f:\n    f.write({name!r} + ' ' + sys.argv[1] + '\\n')\n"
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\nfrom pathlib import Path\n{log}{textwrap.dedent(body)}"
    )
    script.chmod(0o755)


def calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """(PATH folder holding only the stand-in tools, a RAR file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    archive = tmp_path / "in.rar"
    archive.write_bytes(RAR5)
    return bin_dir, archive


def fake_7z(bin_dir: Path, name: str, member: str = "DRAM_processed/a.txt", plant_link: bool = False) -> None:
    listing = LISTING_7Z.replace("{member}", member)
    tool(
        bin_dir,
        name,
        f"""
        if sys.argv[1] == "l":
            print({listing!r}.replace("{{archive}}", sys.argv[-1]))
        else:
            out = Path(next(a[2:] for a in sys.argv if a.startswith("-o")))
            (out / "DRAM_processed").mkdir(parents=True, exist_ok=True)
            (out / {member!r}).write_bytes(b"data")
            if {plant_link!r}:
                os.symlink("/", out / "DRAM_processed" / "root")
    """,
    )


def failing(bin_dir: Path, name: str, message: str) -> None:
    tool(bin_dir, name, f"sys.stderr.write({message!r} + '\\n'); sys.exit(1)\n")


def test_no_tool_names_what_to_install(env, tmp_path: Path) -> None:
    _, archive = env
    with pytest.raises(PrepareError) as err:
        extract(archive, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(f"{archive}: cannot unpack RAR in.rar")
    for exe in ("bsdtar", "unrar", "unar", "7z", "7zz"):
        assert f"{exe}: not installed" in msg
    assert "libarchive" in msg and "envs/mopeft.yaml" in msg and "'unar'" in msg and "'7zip'" in msg


def test_a_failing_tool_hands_over_to_the_next(env, tmp_path: Path) -> None:
    bin_dir, archive = env
    failing(bin_dir, "bsdtar", "bsdtar: Unrecognized archive format")
    failing(bin_dir, "unrar", "unrar-free: this is not the unrar you are looking for")
    fake_7z(bin_dir, "7z")
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "DRAM_processed" / "a.txt").read_bytes() == b"data"
    assert calls(bin_dir) == ["bsdtar -c", "unrar lt", "7z l", "7z x"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rar-")], "staging folder left behind"


def test_every_failure_is_reported(env, tmp_path: Path) -> None:
    bin_dir, archive = env
    failing(bin_dir, "bsdtar", "bsdtar: Unrecognized archive format")
    failing(bin_dir, "7zz", "ERROR: in.rar : Cannot open the file as archive")
    with pytest.raises(PrepareError) as err:
        extract(archive, tmp_path / "out")
    msg = str(err.value)
    assert "bsdtar: exit 1: bsdtar: Unrecognized archive format" in msg
    assert "7zz: exit 1: ERROR: in.rar : Cannot open the file as archive" in msg
    assert "unar: not installed" in msg and "install one of" in msg


def test_bsdtar_stream_is_checked_like_a_tar(env, tmp_path: Path, monkeypatch) -> None:
    """bsdtar only converts: a link in its tar stream becomes a copy; an escape is refused."""
    bin_dir, archive = env
    tars = {}
    for key, target in (("good", "d/f.txt"), ("bad", "../../x")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("d/f.txt")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"data"))
            link = tarfile.TarInfo("l.txt")
            link.type, link.linkname = tarfile.SYMTYPE, target
            tf.addfile(link)
        tars[key] = tmp_path / f"{key}.tar"
        tars[key].write_bytes(buf.getvalue())
    tool(bin_dir, "bsdtar", "sys.stdout.buffer.write(Path(os.environ['FAKE_TAR']).read_bytes())\n")
    monkeypatch.setenv("FAKE_TAR", str(tars["good"]))
    assert extract(archive, tmp_path / "ok") == tmp_path / "ok"
    assert (tmp_path / "ok" / "l.txt").read_bytes() == b"data" and not (
        tmp_path / "ok" / "l.txt"
    ).is_symlink()
    monkeypatch.setenv("FAKE_TAR", str(tars["bad"]))
    with pytest.raises(PrepareError, match=r"link 'l\.txt' -> '\.\./\.\./x' leaves the archive"):
        extract(archive, tmp_path / "no")
    assert not any((tmp_path / "no").iterdir())
    assert calls(bin_dir) == ["bsdtar -c", "bsdtar -c"]


def test_unsafe_listing_stops_before_any_tool_writes(env, tmp_path: Path) -> None:
    bin_dir, archive = env
    fake_7z(bin_dir, "7z", member="../../outside.txt")
    fake_7z(bin_dir, "7zz")
    with pytest.raises(PrepareError, match=r"member '\.\./\.\./outside\.txt' escapes"):
        extract(archive, tmp_path / "out" / "dest")
    assert calls(bin_dir) == ["7z l"], "no extraction, and no other tool, after a refused listing"
    assert not (tmp_path / "outside.txt").exists()


def test_link_in_the_listing_is_refused(env, tmp_path: Path) -> None:
    bin_dir, archive = env
    tool(
        bin_dir,
        "unrar",
        """
        print("UNRAR 7.00 freeware\\n\\nArchive: in.rar\\nDetails: RAR 5\\n")
        print("        Name: DRAM_processed/a.txt\\n        Type: File\\n        Size: 4\\n")
        print("        Name: DRAM_processed/etc\\n        Type: Symbolic link\\n      Target: /etc\\n")
    """,
    )
    with pytest.raises(
        PrepareError, match=r"member 'DRAM_processed/etc' is a symbolic link \(unrar's listing\)"
    ):
        extract(archive, tmp_path / "out")
    assert calls(bin_dir) == ["unrar lt"]


def test_what_a_tool_wrote_is_scanned(env, tmp_path: Path) -> None:
    """A tool whose listing was clean but which created a link anyway: nothing reaches the target."""
    bin_dir, archive = env
    fake_7z(bin_dir, "7z", plant_link=True)
    with pytest.raises(PrepareError, match=r"7z wrote DRAM_processed/root as a link or special file"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rar-")]


def test_dram_without_a_rar_tool_says_what_to_install(env, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    dataset_module("dram").write_miniature(raw)
    write_zip(
        raw / "DRAM_processed.zip", {**read_zip(raw / "DRAM_processed.zip"), "DRAM_processed.rar": RAR5}
    )
    with pytest.raises(
        PrepareError, match=r"DRAM_processed\.rar: cannot unpack RAR .*install one of: bsdtar"
    ):
        prepare_dataset("dram", raw, tmp_path / "prepared", PrepareOptions())
    assert not (tmp_path / "prepared" / "dram").exists()


def test_the_conda_env_ships_a_rar_reader() -> None:
    import yaml

    env = yaml.safe_load((Path(__file__).resolve().parents[1] / "envs" / "mopeft.yaml").read_text())
    assert "libarchive" in env["dependencies"]  # conda-forge's libarchive installs bsdtar
