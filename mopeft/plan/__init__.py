"""The resource plan of a run: its GPU jobs and what each needs (``mopeft plan``)."""
