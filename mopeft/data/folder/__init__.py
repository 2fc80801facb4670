"""A user's own folder dataset: its config entry as a DatasetSpec, its preparer, why a class is missing."""
