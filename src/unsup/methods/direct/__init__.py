"""direct methods."""
