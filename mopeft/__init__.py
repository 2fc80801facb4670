"""mopeft: a reproducible benchmark of parameter-efficient fine-tuning of SAM (MoPEFT study)."""

__version__ = "0.1.0"
