"""Download logic without the internet: a Range-capable HTTP server on 127.0.0.1 in a thread."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from mopeft.data.sources import download as dl
from mopeft.data.spec import Source

BODY = bytes(range(256)) * 64  # 16 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves BODY at /file.bin honouring ``Range: bytes=N-``; /norange.bin ignores Range."""

    requests: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        if self.path not in ("/file.bin", "/norange.bin"):
            self.send_error(404)
            return
        start = 0
        if rng and self.path == "/file.bin":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(BODY)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        self.wfile.write(BODY[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.timeout = 5
    _Handler.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopper = threading.Timer(60, httpd.shutdown)  # bounded even if a test hangs
    stopper.daemon = True
    stopper.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stopper.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


SHA = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()


def test_http_download_resumes_part_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(BODY[:5000])
    dl.http_download(f"{server}/file.bin", dest)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "file.bin.part").exists()
    assert _Handler.requests == ["bytes=5000-"]


def test_server_ignoring_range_restarts_cleanly(server: str, tmp_path: Path) -> None:
    (tmp_path / "norange.bin.part").write_bytes(b"garbage" * 10)
    dl.http_download(f"{server}/norange.bin", tmp_path / "norange.bin")
    assert (tmp_path / "norange.bin").read_bytes() == BODY


def test_complete_part_file_416(server: str, tmp_path: Path) -> None:
    (tmp_path / "file.bin.part").write_bytes(BODY)
    dl.http_download(f"{server}/file.bin", tmp_path / "file.bin")
    assert (tmp_path / "file.bin").read_bytes() == BODY


def test_download_checks_checksums_and_caches(server: str, tmp_path: Path) -> None:
    cache, raw = tmp_path / "cache", tmp_path / "raw"
    src = Source("file.bin", "http", url=f"{server}/file.bin", sha256=SHA, md5=MD5)
    dl.download_sources([src], raw, "toy", cache)
    assert (raw / "file.bin").read_bytes() == BODY
    assert (cache / "toy" / "file.bin").exists()
    n = len(_Handler.requests)
    # a second raw folder reuses the cached copy without touching the server
    dl.download_sources([src], tmp_path / "raw2", "toy", cache)
    assert (tmp_path / "raw2" / "file.bin").read_bytes() == BODY
    assert len(_Handler.requests) == n


def test_cached_file_with_wrong_checksum_is_replaced(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "file.bin").write_bytes(b"stale")
    src = Source("file.bin", "http", url=f"{server}/file.bin", sha256=SHA)
    dl.download_sources([src], tmp_path / "raw", "toy", cache)
    assert (tmp_path / "raw" / "file.bin").read_bytes() == BODY


def test_wrong_checksum_is_an_error_naming_the_file(server: str, tmp_path: Path) -> None:
    src = Source("file.bin", "http", url=f"{server}/file.bin", sha256="0" * 64)
    with pytest.raises(dl.ChecksumError, match=r"file\.bin: sha256 .* does not match"):
        dl.download_sources([src], tmp_path / "raw", "toy", tmp_path / "cache")
    assert not (tmp_path / "raw" / "file.bin").exists()
    assert (tmp_path / "cache" / "toy" / "file.bin.bad").exists()


def test_http_error_names_the_file(server: str, tmp_path: Path) -> None:
    with pytest.raises(dl.PrepareError, match=r"missing\.bin: HTTP 404"):
        dl.http_download(f"{server}/missing.bin", tmp_path / "missing.bin")


def test_manual_sources_listed_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(dl.ManualDownloadRequired) as err:
        dl.download_dataset("bdd100k", tmp_path / "raw", cache=tmp_path / "cache")
    msg = str(err.value)
    for name in ("bdd100k_images_10k.zip", "bdd100k_sem_seg_labels_trainval.zip"):
        assert f"{name}: put it at {tmp_path / 'raw' / name}" in msg
    assert "bdd-data.berkeley.edu" in msg


def test_manual_file_present_is_checked(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    src = Source("a.zip", "manual", md5=MD5, instructions="ask the authors")
    (raw / "a.zip").write_bytes(BODY)
    assert dl.download_sources([src], raw, "toy", tmp_path / "cache") == [raw / "a.zip"]
    (raw / "a.zip").write_bytes(b"other")
    with pytest.raises(dl.ChecksumError, match=r"a\.zip: md5"):
        dl.download_sources([src], raw, "toy", tmp_path / "cache")


def test_gdrive_confirm_page_parsing() -> None:
    page = (
        '<html><form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">'
        "</form></html>"
    )
    url = dl._gdrive_confirm_url(page, "ABC")
    assert url == "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    assert "confirm=XyZ" in dl._gdrive_confirm_url(
        'href="/uc?export=download&amp;confirm=XyZ&amp;id=ABC"', "ABC"
    )
    assert dl._gdrive_confirm_url("<html>quota exceeded</html>", "ABC") is None


def test_git_clone_at_ref(tmp_path: Path) -> None:
    import subprocess

    origin = tmp_path / "origin"
    origin.mkdir()
    env_args = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    (origin / "a.txt").write_text("one")
    subprocess.run(["git", "-C", str(origin), "add", "a.txt"], check=True)
    subprocess.run(["git", *env_args, "-C", str(origin), "commit", "-qm", "1"], check=True)
    first = subprocess.run(["git", "-C", str(origin), "rev-parse", "HEAD"], capture_output=True, text=True)
    (origin / "a.txt").write_text("two")
    subprocess.run(["git", *env_args, "-C", str(origin), "commit", "-qam", "2"], check=True)
    dl.git_clone(origin.as_uri(), tmp_path / "at_ref", first.stdout.strip())
    assert (tmp_path / "at_ref" / "a.txt").read_text() == "one"
    dl.git_clone(origin.as_uri(), tmp_path / "head")
    assert (tmp_path / "head" / "a.txt").read_text() == "two"
    with pytest.raises(dl.PrepareError, match="failed"):
        dl.git_clone((tmp_path / "nowhere").as_uri(), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_failed_automatic_download_explains_the_manual_route(server: str, tmp_path: Path) -> None:
    src = Source("gone.zip", "http", url=f"{server}/gone.zip", instructions="Mirror: example.org/gone.")
    with pytest.raises(dl.PrepareError) as err:
        dl.download_sources([src], tmp_path / "raw", "toy", tmp_path / "cache")
    msg = str(err.value)
    assert "gone.zip: HTTP 404" in msg
    assert f"gone.zip: put it at {tmp_path / 'raw' / 'gone.zip'}" in msg
    assert "Mirror: example.org/gone." in msg


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every HTTP and Drive download fail as it does without a network; return the names tried."""
    tried: list[str] = []

    def fail(what: str, dest: Path, *args, **kwargs) -> Path:
        tried.append(dest.name)
        raise dl.PrepareError(f"{dest.name}: cannot reach {what} (offline)")

    monkeypatch.setattr(dl, "http_download", fail)
    monkeypatch.setattr(dl, "gdrive_download", fail)
    return tried


@pytest.mark.parametrize(
    ("key", "names"),
    [("suim", ("TEST.zip", "train_val.zip")), ("cub_200", ("CUB_200_2011.tgz", "segmentations.tgz"))],
)
def test_offline_download_reports_every_missing_source_at_once(
    key: str, names: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure used to end the run, so the user learned of the second file only after
    fetching the first by hand; now every source is tried and all are named in one error."""
    tried = _offline(monkeypatch)
    raw = tmp_path / "raw"
    with pytest.raises(dl.ManualDownloadRequired) as err:
        dl.download_dataset(key, raw, cache=tmp_path / "cache")
    msg = str(err.value)
    assert sorted(tried) == sorted(names)
    for name in names:
        assert f"{name}: cannot reach" in msg, "the reason of each failure is kept"
        assert f"{name}: put it at {raw / name}" in msg


def test_what_can_be_downloaded_is_placed_before_the_error(server: str, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    sources = [
        Source("gone.zip", "http", url=f"{server}/gone.zip"),
        Source("file.bin", "http", url=f"{server}/file.bin", sha256=SHA),
        Source("hand.zip", "manual", instructions="ask the authors"),
        Source("extra.zip", "http", url=f"{server}/extra.zip", required=False),
    ]
    with pytest.raises(dl.ManualDownloadRequired) as err:
        dl.download_sources(sources, raw, "toy", tmp_path / "cache")
    msg = str(err.value)
    assert (raw / "file.bin").read_bytes() == BODY, "a failure before it did not stop this download"
    assert "gone.zip: HTTP 404" in msg and f"hand.zip: put it at {raw / 'hand.zip'}" in msg
    assert "extra.zip" not in msg, "an optional source that cannot be downloaded is not required"


def test_checksum_mismatch_is_reported_with_the_missing_files(server: str, tmp_path: Path) -> None:
    sources = [
        Source("file.bin", "http", url=f"{server}/file.bin", sha256="0" * 64),
        Source("hand.zip", "manual", instructions="ask the authors"),
    ]
    with pytest.raises(dl.ChecksumError) as err:
        dl.download_sources(sources, tmp_path / "raw", "toy", tmp_path / "cache")
    assert "file.bin: sha256" in str(err.value) and "hand.zip: put it at" in str(err.value)


def test_reissued_file_matches_any_published_md5(tmp_path: Path) -> None:
    from mopeft.data.prepared.write import verify_sources
    from mopeft.data.spec import DatasetSpec

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.zip").write_bytes(BODY)
    src = Source("a.zip", "manual", md5="0" * 32, also_md5=(MD5,))
    assert dl.download_sources([src], raw, "toy", tmp_path / "cache") == [raw / "a.zip"]
    spec = DatasetSpec("toy", "toy", "x", ("c",), (src,), expected_test=1)
    assert verify_sources(spec, raw) == {"a.zip": SHA}
    neither = Source("a.zip", "manual", md5="0" * 32, also_md5=("1" * 32,))
    with pytest.raises(
        dl.ChecksumError, match=rf"a\.zip: md5 {MD5} does not match the expected one of 0+, 1+"
    ):
        dl.download_sources([neither], raw, "toy", tmp_path / "cache")
    with pytest.raises(dl.PrepareError, match=r"a\.zip: md5 .* one of"):
        verify_sources(DatasetSpec("toy", "toy", "x", ("c",), (neither,), expected_test=1), raw)


def test_bdd_labels_accept_both_published_md5s() -> None:
    labels = {s.filename: s for s in dl.get_spec("bdd100k").sources}["bdd100k_sem_seg_labels_trainval.zip"]
    assert set(labels.md5s) == {"098c0c17ca58364c47c5882b3eb7058d", "9a2968dde3345eeb689cffb1e26f9c78"}


def test_git_sources_are_pinned_to_a_commit_and_checked(tmp_path: Path) -> None:
    import subprocess

    from mopeft.data.prepared.write import verify_sources
    from mopeft.data.registry import all_specs
    from mopeft.data.sources.checksums import is_commit
    from mopeft.data.spec import DatasetSpec

    git_sources = [s for spec in all_specs() for s in spec.sources if s.kind == "git"]
    assert len(git_sources) == 3 and all(is_commit(s.git_ref) for s in git_sources)

    origin = tmp_path / "origin"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(origin)]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    shas = []
    for text in ("one", "two"):
        (origin / "a.txt").write_text(text)
        subprocess.run([*git, "add", "a.txt"], check=True)
        subprocess.run([*git, "commit", "-qm", text], check=True)
        shas.append(
            subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        )
    raw = tmp_path / "raw"
    dl.git_clone(origin.as_uri(), raw / "repo", shas[0])
    src = Source("repo", "git", url=origin.as_uri(), git_ref=shas[0])
    spec = DatasetSpec("toy", "toy", "x", ("c",), (src,), expected_test=1)
    assert verify_sources(spec, raw) == {"repo": f"git {shas[0]}"}  # what meta.json records
    subprocess.run(["git", "-C", str(raw / "repo"), "fetch", "-q", "origin", shas[1]], check=True)
    subprocess.run(["git", "-C", str(raw / "repo"), "checkout", "-q", shas[1]], check=True)
    with pytest.raises(
        dl.PrepareError, match=rf"checked out commit {shas[1]}, but .* is pinned at {shas[0]}"
    ):
        verify_sources(spec, raw)


def test_every_module_says_how_its_sources_are_pinned() -> None:
    """No publisher gives a sha256: a file source without any checksum must say so in its module
    (its sha256 then goes to meta.json), and git sources are pinned to a commit."""
    from mopeft.data.registry import DATASETS, dataset_module

    for key in DATASETS:
        module = dataset_module(key)
        for src in module.SPEC.sources:
            if src.kind == "git":
                assert "pinned" in module.__doc__, key
            elif not (src.sha256 or src.md5s):
                assert "Checksums:" in module.__doc__ and "meta.json" in module.__doc__, (key, src.filename)
