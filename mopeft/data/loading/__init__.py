"""Feeding a prepared dataset to the model: image/label pairs, step batches, SAM's input convention."""
