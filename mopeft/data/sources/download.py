"""Fetch a dataset's raw sources into ``data/raw/<key>/``.

Downloads are the fragile part of a benchmark (multi-GB files, Google-Drive quota errors, servers
that drop connections), so every HTTP/Drive file goes through one cache folder (``$MOPEFT_CACHE`` or
``~/.cache/mopeft``): a ``.part`` file is resumed with a ``Range`` request, the checksum is checked
before the file is renamed into the cache, and a cached file whose checksum matches is reused
instead of downloaded again. Manual and Kaggle sources cannot be automated; they are collected,
together with every automatic download that failed (offline, Drive quota) or did not match its
checksum, and reported in one error naming every missing file, why, where to put it and where to
get it; what could be downloaded is in place by then.
"""

from __future__ import annotations

import html
import http.cookiejar
import logging
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from mopeft.data.datasets.common import PrepareError
from mopeft.data.registry import get_spec
from mopeft.data.sources.checksums import checksum_problem, file_digest, git_head, is_commit
from mopeft.data.spec import Source
from mopeft.io import atomic_dir
from mopeft.progress import progress

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "mopeft-downloader/0.1 (+https://github.com/)"
GDRIVE_URL = "https://drive.usercontent.google.com/download"


class ManualDownloadRequired(PrepareError):
    """One or more sources must be fetched by hand; the message lists them all."""


class ChecksumError(PrepareError):
    """A downloaded or cached file does not match its published checksum."""


def cache_dir() -> Path:
    return Path(os.environ.get("MOPEFT_CACHE") or Path.home() / ".cache" / "mopeft")


# -------------------------------------------------------------------------------------------- HTTP
def _open(
    url: str,
    headers: dict[str, str],
    opener: urllib.request.OpenerDirector | None = None,
    timeout: float = 60,
):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    return (opener or urllib.request.build_opener()).open(req, timeout=timeout)


def http_download(
    url: str, dest: Path, opener: urllib.request.OpenerDirector | None = None, timeout: float = 60
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial file with a Range request.

    A server that ignores Range (answers 200) makes us start over rather than append garbage; 416
    (range not satisfiable) means the part file already holds the whole body.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _open(url, headers, opener, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            part.replace(dest)
            return dest
        raise PrepareError(f"{dest.name}: HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PrepareError(f"{dest.name}: cannot reach {url} ({exc})") from None
    with resp:
        status = getattr(resp, "status", 200)
        mode = "ab" if (have and status == 206) else "wb"
        if have and status == 206:
            log.info("resuming %s at byte %d", dest.name, have)
        total = resp.headers.get("Content-Length")
        written = 0
        start = have if mode == "ab" else 0  # the bar counts the whole file, resumed bytes included
        size = start + int(total) if total is not None else None
        try:
            with open(part, mode) as f, progress(total=size, initial=start, desc=dest.name, unit="B") as bar:
                while block := resp.read(CHUNK):
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, TimeoutError) as exc:
            raise PrepareError(
                f"{dest.name}: download interrupted after {written} bytes ({exc}); run again to resume"
            ) from None
    if total is not None and written != int(total):
        raise PrepareError(f"{dest.name}: got {written} of {total} bytes from {url}; run again to resume")
    part.replace(dest)
    return dest


# ------------------------------------------------------------------------------------ Google Drive
def _gdrive_confirm_url(page: str, file_id: str) -> str | None:
    """The large-file warning page carries a form (action + hidden confirm/uuid inputs)."""
    form = re.search(r'<form[^>]+action="([^"]+)"(.*?)</form>', page, re.S)
    if form:
        fields = dict(re.findall(r'name="([^"]+)"\s+value="([^"]*)"', form.group(2)))
        fields.setdefault("id", file_id)
        return html.unescape(form.group(1)) + "?" + urllib.parse.urlencode(fields)
    token = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if token:
        return f"{GDRIVE_URL}?" + urllib.parse.urlencode(
            {"id": file_id, "export": "download", "confirm": token.group(1)}
        )
    return None


def gdrive_download(file_id: str, dest: Path, timeout: float = 60) -> Path:
    """Google Drive without gdown: ask for the file; if Drive answers with its "cannot scan for
    viruses" HTML page, follow that page's confirm form (cookies kept), then stream with resume."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = f"{GDRIVE_URL}?" + urllib.parse.urlencode({"id": file_id, "export": "download"})
    try:
        with _open(url, {}, opener, timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            page = resp.read(2 << 20).decode("utf-8", "replace") if "text/html" in ctype else None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise PrepareError(f"{dest.name}: cannot reach Google Drive for id {file_id} ({exc})") from None
    if page is not None:
        confirmed = _gdrive_confirm_url(page, file_id)
        if confirmed is None:
            raise PrepareError(
                f"{dest.name}: Google Drive refused id {file_id} (quota or permission); download "
                f"https://drive.google.com/uc?id={file_id} by hand into {dest.parent}"
            )
        url = confirmed
    return http_download(url, dest, opener, timeout)


# --------------------------------------------------------------------------------------------- git
def git_clone(url: str, dest: Path, ref: str | None = None) -> Path:
    """Shallow clone at ``ref`` (branch, tag or commit) into a temp sibling, then rename.

    A commit ``ref`` (how every git source is pinned) is checked after checkout, so a server that
    answered with something else cannot slip through.
    """
    if dest.exists():
        return dest
    with atomic_dir(dest) as tmp:  # the umask's permissions; only a complete clone lands at dest
        cmds = [
            ["git", "init", "-q", str(tmp)],
            ["git", "-C", str(tmp), "remote", "add", "origin", url],
            ["git", "-C", str(tmp), "fetch", "-q", "--depth", "1", "origin", ref or "HEAD"],
            ["git", "-C", str(tmp), "checkout", "-q", "FETCH_HEAD"],
        ]
        for cmd in cmds:
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise PrepareError(f"{dest}: `{' '.join(cmd)}` failed: {res.stderr.strip()[:300]}")
        if is_commit(ref) and (head := git_head(tmp)) != ref:
            raise PrepareError(f"{dest}: {url} gave commit {head}, not the pinned {ref}")
    return dest


# ------------------------------------------------------------------------------------------ driver
def manual_message(missing: Iterable[tuple[Source, Path]]) -> str:
    lines = ["these files must be downloaded by hand:"]
    for src, path in missing:
        where = f" from {src.url}" if src.url else ""
        lines.append(f"  - {src.filename}: put it at {path}{where}. {src.instructions}".rstrip())
    return "\n".join(lines)


def _place(cached: Path, target: Path) -> None:
    """Hard-link the cached file into the raw folder (copy across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(cached, tmp)
    except OSError:
        shutil.copyfile(cached, tmp)
    os.replace(tmp, target)


def fetch_source(src: Source, raw_dir: Path, key: str, cache: Path | None = None) -> Path:
    """Make ``raw_dir/src.filename`` exist with the right checksum (download, cache or reuse)."""
    target = raw_dir / src.filename
    if src.kind == "git":
        return git_clone(src.url, target, src.git_ref)
    if target.exists() and checksum_problem(target, src) is None:
        return target
    cached = (cache or cache_dir()) / key / src.filename
    if cached.exists():
        if (problem := checksum_problem(cached, src)) is None:
            log.info("reusing cached %s", cached)
            _place(cached, target)
            return target
        log.warning("%s; downloading again", problem)
        cached.unlink()
    if src.kind == "gdrive":
        gdrive_download(src.gdrive_id or "", cached)
    elif src.kind == "http":
        http_download(src.url, cached)
    else:
        raise ValueError(f"{src.filename}: cannot download a {src.kind!r} source automatically")
    if (problem := checksum_problem(cached, src)) is not None:
        cached.rename(cached.with_name(cached.name + ".bad"))
        raise ChecksumError(problem + " (moved aside with suffix .bad)")
    # Most publishers give no sha256: say which file this run got (meta.json records it as well).
    log.info("downloaded %s: sha256 %s", src.filename, file_digest(cached, "sha256"))
    _place(cached, target)
    return target


def download_sources(
    sources: Iterable[Source], raw_dir: Path, key: str, cache: Path | None = None
) -> list[Path]:
    """Fetch every source that can be fetched, then report every one still missing in one error.

    A failed automatic download (offline, Drive quota, moved file) or a checksum mismatch does not
    stop the loop: the user who must fetch files by hand should learn about all of them in one run,
    not one per attempt, and whatever can be downloaded is already in place when they come back. An
    optional source (``required=False``) that cannot be downloaded is only a warning.
    The error is a :class:`ChecksumError` when a file arrived but does not match (something to
    investigate, not just to fetch), else :class:`ManualDownloadRequired`.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    missing: list[tuple[Source, Path]] = []
    reasons: list[str] = []  # why each automatic or present-but-wrong source is missing
    bad_checksum = False
    for src in sources:
        path = raw_dir / src.filename
        if src.kind in ("manual", "kaggle"):
            if path.exists():
                if not path.is_dir() and (problem := checksum_problem(path, src)):
                    reasons.append(problem)
                    missing.append((src, path))
                    bad_checksum = True
                else:
                    done.append(path)
            elif src.required:
                missing.append((src, path))
            continue
        try:
            done.append(fetch_source(src, raw_dir, key, cache))
        except PrepareError as exc:
            if not src.required and not isinstance(exc, ChecksumError):
                log.warning("%s (optional source, skipped)", exc)
                continue
            # Mirrors fail (Drive quotas, moved files): say how to place the file by hand instead.
            reasons.append(str(exc))
            missing.append((src, path))
            bad_checksum = bad_checksum or isinstance(exc, ChecksumError)
    if missing:
        message = "".join(f"{reason}\n" for reason in reasons) + f"{key}: " + manual_message(missing)
        raise (ChecksumError if bad_checksum else ManualDownloadRequired)(message)
    return done


def download_dataset(key: str, raw_dir: str | Path, cache: Path | None = None) -> list[Path]:
    """Fetch the raw sources of dataset ``key`` into ``raw_dir``."""
    return download_sources(get_spec(key).sources, Path(raw_dir), key, cache)
