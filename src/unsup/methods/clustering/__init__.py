"""clustering methods."""
