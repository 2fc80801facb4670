"""Official SAM weights: download, verification and resizing to other image sizes.

Each official checkpoint's URL and sha256 live in the architecture registry
(``mopeft.model.arch.ARCHS[...].checkpoint``: ViT-B, ViT-L, ViT-H); the ``01ec64`` in a file name is
not a sha256 prefix. Verification happens before ``torch.load`` so a truncated or substituted file
never reaches the unpickler.
"""

from __future__ import annotations

import logging
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F

from mopeft.errors import InputError, MissingInput, UserError
from mopeft.io import atomic_path, sha256_file
from mopeft.model.arch import ARCHS, OfficialCheckpoint, get_arch
from mopeft.torch_files import load_torch

log = logging.getLogger(__name__)


def official_checkpoint(arch: str) -> OfficialCheckpoint:
    """The published checkpoint of ``arch``; an InputError for an architecture that has none."""
    if arch not in ARCHS:
        raise InputError(f"--arch: unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    ref = get_arch(arch).checkpoint
    if ref is None:
        raise InputError(
            f"--arch {arch}: has no official checkpoint to download; `mopeft weights --arch tiny` "
            "installs the packaged tiny SAM"
        )
    return ref


_VIT_B = official_checkpoint("vit_b")
VIT_B_URL = _VIT_B.url
VIT_B_FILENAME = _VIT_B.filename
VIT_B_SHA256 = _VIT_B.sha256

# The tiny SAM pretrained by `mopeft pretrain-tiny` on generated scenes (docs/demo.md). It ships
# with the package (1.2 MB) so that every machine fine-tunes the same bits: pretraining is
# deterministic on one CPU, but another CPU's float kernels may round differently.
TINY_FILENAME = "sam_tiny_scenes_v1.pth"
TINY_SHA256 = "2ac41bd1bd8642f4c470ddae1103056dabba83b2d8437eef5c8aa55cd8047f5f"
TINY_ASSET = Path(__file__).resolve().parent / "assets" / TINY_FILENAME

# sha256 -> what a table's provenance calls these base weights.
KNOWN_WEIGHTS = {
    **{spec.checkpoint.sha256: spec.checkpoint.label for spec in ARCHS.values() if spec.checkpoint},
    TINY_SHA256: "tiny SAM pretrained on generated scenes (mopeft pretrain-tiny)",
}

_REL_POS = re.compile(r"^image_encoder\.blocks\.(\d+)\.attn\.rel_pos_[hw]$")


class WeightsUnavailable(UserError, ValueError):
    """The weights cannot be downloaded here; the message says where to place the file by hand.

    A ``UserError`` so the CLI prints it as one line: compute nodes are often offline, and this
    is the study's first job.
    """


def _by_hand(url: str, dest: Path, sha256: str | None, why: object) -> WeightsUnavailable:
    digest = f" (sha256 {sha256})" if sha256 else ""
    return WeightsUnavailable(
        f"{dest}: cannot download {url} ({why}); if this machine is offline, download that URL on "
        f"one that is online and copy the file to {dest}{digest}, then rerun (it is verified, not "
        "downloaded again)"
    )


def download(url: str, dest: Path, sha256: str | None, chunk: int = 1 << 20) -> Path:
    """Download with resume: bytes go to ``dest.part`` and a re-run continues with an HTTP Range request.

    The file is renamed onto ``dest`` only after its sha256 matches, so ``dest`` existing means verified.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 and sha256_file(dest) != sha256:
            raise InputError(f"{dest}: exists but its sha256 differs from {sha256}; delete it and re-run")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        raise _by_hand(url, dest, sha256, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:  # offline, DNS, proxy, timeout
        raise _by_hand(url, dest, sha256, getattr(exc, "reason", exc)) from None
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
        log.info("downloading %s -> %s (%s bytes%s)", url, dest, total or "?", ", resumed" if resumed else "")
        done = have if resumed else 0
        with open(part, mode) as f:
            try:
                while block := response.read(chunk):
                    f.write(block)
                    done += len(block)
                    if total and done % (chunk * 32) < chunk:
                        log.info("%.0f%%", 100 * done / total)
            except (TimeoutError, ConnectionError, urllib.error.URLError) as exc:
                raise WeightsUnavailable(
                    f"{dest}: download of {url} interrupted after {done} bytes ({exc}); rerun to resume "
                    f"from {part}, or place the file at {dest} by hand"
                ) from None
    got = sha256_file(part)
    if sha256 and got != sha256:
        part.unlink()
        raise InputError(f"{dest}: downloaded sha256 {got} != expected {sha256} (partial file removed)")
    if not sha256:  # nothing to check against: say what arrived, so the caller can pin it
        log.warning("%s: no expected sha256 to verify against; its sha256 is %s", dest, got)
    part.replace(dest)
    return dest


def download_official(arch: str, out_dir: Path) -> Path:
    """Fetch ``arch``'s official checkpoint into ``out_dir`` (resumable, sha256-verified).

    Why the digest is required: the registry holds one for every official checkpoint, so a file that
    could not be verified never becomes a run's base weights (its tables would cite unknown bytes).
    """
    ref = official_checkpoint(arch)
    return download(ref.url, Path(out_dir) / ref.filename, ref.sha256)


def fetch_weights(arch: str, out_dir: Path) -> Path:
    """What `mopeft weights --arch` does: the official download, or the packaged tiny checkpoint."""
    return install_tiny(out_dir) if arch == "tiny" else download_official(arch, out_dir)


def install_tiny(out_dir: Path) -> Path:
    """Copy the packaged tiny checkpoint into ``out_dir`` (verified), like a download of ViT-B."""
    dest = Path(out_dir) / TINY_FILENAME
    if sha256_file(TINY_ASSET) != TINY_SHA256:
        raise InputError(f"{TINY_ASSET}: sha256 differs from {TINY_SHA256}; reinstall mopeft")
    if dest.exists() and sha256_file(dest) == TINY_SHA256:
        return dest
    with atomic_path(dest) as tmp:
        shutil.copyfile(TINY_ASSET, tmp)
    return dest


def load_checkpoint(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Verify (when a digest is given) and load a state dict with the safe unpickler."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: checkpoint not found (run `mopeft weights --arch ARCH --out DIR`)")
    if sha256:
        got = sha256_file(path)
        if got != sha256:
            raise InputError(
                f"{path}: sha256 {got} does not match expected {sha256}: a damaged or different file; "
                "fetch it again with `mopeft weights --arch ARCH --out DIR` (or pass --checkpoint-sha256 "
                "if it is the file you mean)"
            )
    state = load_torch(
        path,
        "base weights must be a SAM state dict (.pth); fetch them again with "
        "`mopeft weights --arch ARCH --out DIR` and pass --checkpoint DIR/<file>.pth",
    )
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: not a state dict; pass SAM weights from `mopeft weights --arch ARCH --out DIR`"
        )
    return state


def _interp_pos_embed(pe: torch.Tensor, grid: int) -> torch.Tensor:
    # (1, g, g, C) -> bilinear on the spatial grid.
    out = F.interpolate(
        pe.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bilinear", align_corners=False
    )
    return out.permute(0, 2, 3, 1).to(pe.dtype)


def _interp_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    # (2g-1, d) -> (2g'-1, d): SAMed interpolates the table as a 1-channel image; width is unchanged.
    out = F.interpolate(
        table[None, None].float(), size=(length, table.shape[1]), mode="bilinear", align_corners=False
    )
    return out[0, 0].to(table.dtype)


def resize_state_dict(
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    global_attn_indexes: tuple[int, ...],
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint to another image size (SAMed recipe).

    Only ``pos_embed`` and the GLOBAL blocks' rel-pos tables depend on the image size; windowed
    blocks' tables depend on the window size, so any other shape mismatch is an error.
    """
    out = dict(state)
    for key, value in state.items():
        if key not in target or target[key].shape == value.shape:
            continue
        want = target[key].shape
        match = _REL_POS.match(key)
        if value.ndim != len(want) or value.shape[-1] != want[-1]:  # only the grid may differ
            raise InputError(f"{source}: {key} has shape {tuple(value.shape)}, model expects {tuple(want)}")
        if key == "image_encoder.pos_embed":
            out[key] = _interp_pos_embed(value, want[1])
        elif match and int(match.group(1)) in global_attn_indexes:
            out[key] = _interp_rel_pos(value, want[0])
        else:
            raise InputError(f"{source}: {key} has shape {tuple(value.shape)}, model expects {tuple(want)}")
    return out
