"""What a person looks at: patches in a terminal, as HTML or as an entropy plot, patch statistics, and the
plots of runs and reports (`plots`)."""

from blt.viz.patches import (
    PATCH_SIZE_CURVE_FILE,
    PLOT_BYTES,
    PatchStats,
    format_stats,
    patch_stats,
    plot_entropies,
    plot_patch_size_curves,
    render_html,
    render_terminal,
    write_patch_size_curves,
)

__all__ = ["PATCH_SIZE_CURVE_FILE", "PLOT_BYTES", "PatchStats", "format_stats", "patch_stats", "plot_entropies",
           "plot_patch_size_curves", "render_html", "render_terminal", "write_patch_size_curves"]
