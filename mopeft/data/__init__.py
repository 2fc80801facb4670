"""Datasets: registry of the 22 MESS datasets + FAIR-1M, preparers, raw miniatures, loaders."""
