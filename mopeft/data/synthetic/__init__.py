"""Generated data: miniatures of the registered datasets' raw layouts and the synthetic scenes."""
