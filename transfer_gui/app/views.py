"""What the steps share on the page: named outputs, column names, small formatters.

Every event that updates several components returns a ``typing.NamedTuple``; the layout lists its
output components by field name with ``outputs``, which refuses a field without a component and a
component without a field. So adding a component to an event cannot silently shift another.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..engine.images import IMAGE_EXTENSIONS

__all__ = ["outputs", "heavy_group", "fmt_s", "image_extensions", "OK", "WARN", "COUNTS_COLUMNS", "SKIPPED_COLUMNS",
           "PER_CLASS_COLUMNS", "BATCH_COLUMNS"]

# Column names of the app's tables, also their headers while empty.
COUNTS_COLUMNS = ["class", "images"]
SKIPPED_COLUMNS = ["file", "reason"]
PER_CLASS_COLUMNS = ["class", "precision", "recall", "F1", "images"]
# novelty: the "none of these" score (above 1: unlike every training picture)
BATCH_COLUMNS = ["image", "label", "confidence", "novelty"]
# Words, not emoji: a browser without an emoji font (seen in headless Chromium) shows empty boxes.
OK, WARN = "OK ·", "**Look at this** ·"


def heavy_group(heavy_jobs: int) -> dict:
    """The event options that put an event in the server's one group of heavy work: pictures
    decoded by the hundred or at full size (a batch, the pile, heat maps, a zip, the map). Gradio
    runs ``heavy_jobs`` of the group at once across all users; the rest wait in its queue."""
    return {"concurrency_limit": heavy_jobs, "concurrency_id": "heavy"}


def outputs(view: type[NamedTuple], **components: Any) -> list:
    """The output components of an event that returns ``view``, in the order of its fields.

    Raises:
        TypeError: a field of ``view`` has no component, or a component names no field.
    """
    fields = list(view._fields)
    if set(fields) != set(components):
        missing, extra = set(fields) - set(components), set(components) - set(fields)
        raise TypeError(f"{view.__name__}: no component for {sorted(missing)}; no field for {sorted(extra)}")
    return [components[name] for name in fields]


def fmt_s(seconds: float | None) -> str:
    """Seconds as m:ss ("?" when unknown)."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def image_extensions() -> list[str]:
    """File types the uploaders accept."""
    return sorted(IMAGE_EXTENSIONS)
