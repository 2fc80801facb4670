"""Getting raw releases: downloads with checksums, safe extraction of zip/tar/rar archives."""
