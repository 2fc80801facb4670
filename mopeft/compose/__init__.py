"""Composition: a SAM model with a method installed, and its checkpoints (above model, peft, methods)."""
