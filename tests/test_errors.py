"""The user-error types: each is a ``UserError`` (what the CLI prints as one line) and keeps the
builtin base its callers catch (``except ValueError``, ``pytest.raises(FileNotFoundError)``)."""

from __future__ import annotations

import errno
import re

import pytest

from mopeft.data.errors import PrepareError
from mopeft.data.folder.spec import FolderSpecError
from mopeft.data.registry import UnknownDataset, dataset_module
from mopeft.data.sources.download import ChecksumError, ManualDownloadRequired
from mopeft.detection.xml_io import AnnotationError
from mopeft.errors import InputError, MissingInput, UserError
from mopeft.io import DiskFull, read_json
from mopeft.model.weights import WeightsUnavailable
from mopeft.torch_files import UnreadableFile, load_torch
from mopeft.train.lock import UnitBusy


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (InputError, (ValueError,)),
        (MissingInput, (FileNotFoundError, OSError)),
        (PrepareError, (ValueError,)),
        (ManualDownloadRequired, (PrepareError, ValueError)),
        (ChecksumError, (PrepareError, ValueError)),
        (FolderSpecError, (ValueError,)),
        (UnknownDataset, (KeyError, ValueError)),
        (AnnotationError, (ValueError,)),
        (DiskFull, (OSError, ValueError)),
        (UnreadableFile, (ValueError,)),
        (WeightsUnavailable, (ValueError,)),
        (UnitBusy, (ValueError,)),
    ],
)
def test_user_errors_keep_their_builtin_base(cls: type, bases: tuple[type, ...]) -> None:
    assert issubclass(cls, UserError)
    for base in bases:
        assert issubclass(cls, base), base
    assert str(cls("data/x.json: broken")) == "data/x.json: broken"  # the message alone


def test_missing_input_and_disk_full_print_the_message_not_oserror_form() -> None:
    err = MissingInput("data/raw/x.zip: not found")
    assert str(err) == "data/raw/x.zip: not found" and "Errno" not in str(err)
    full = DiskFull("out/model.safetensors: no space left on device")
    full.errno = errno.ENOSPC
    assert str(full) == "out/model.safetensors: no space left on device"


def test_library_readers_raise_user_errors_naming_the_file(tmp_path) -> None:
    with pytest.raises(MissingInput, match=re.escape(f"{tmp_path / 'missing.json'}: file not found")):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InputError, match=re.escape(f"{bad}: not valid JSON")):
        read_json(bad)
    with pytest.raises(MissingInput, match=re.escape(f"{tmp_path / 'gone.pt'}: file not found")):
        load_torch(tmp_path / "gone.pt")
    with pytest.raises(UnknownDataset) as exc:
        dataset_module("nope")
    assert isinstance(exc.value, UserError) and str(exc.value).startswith("unknown dataset 'nope'")


def test_an_internal_invariant_is_not_a_user_error() -> None:
    """A check that only a bug can fail stays a plain ValueError: the CLI shows its traceback."""
    from mopeft.evaluation.metrics import pool

    with pytest.raises(ValueError) as exc:
        pool([])
    assert not isinstance(exc.value, UserError)
