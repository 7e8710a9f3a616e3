"""Results to pictures and tables: the leaderboard (Markdown, CSV, JSON), the
label-efficiency curves, the HTML report page, and small figure helpers."""

from .figures import (
    Series,
    atomic_path,
    atomic_write_text,
    save_accuracy_curves,
    save_curve,
    save_embedding_plot,
    save_figure,
    save_image_grid,
)
from .leaderboard import (
    format_rows,
    leaderboard_csv,
    leaderboard_markdown,
    leaderboard_table,
    save_label_curves,
    save_method_curve,
    write_report,
)

__all__ = [
    "Series",
    "atomic_path",
    "atomic_write_text",
    "format_rows",
    "leaderboard_csv",
    "leaderboard_markdown",
    "leaderboard_table",
    "save_accuracy_curves",
    "save_curve",
    "save_embedding_plot",
    "save_figure",
    "save_image_grid",
    "save_label_curves",
    "save_method_curve",
    "write_report",
]
