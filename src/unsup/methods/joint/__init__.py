"""joint methods."""
