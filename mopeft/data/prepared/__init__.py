"""The prepared layout: writing it (validation, class coverage, meta.json last) and reading its units."""
