"""Where the app's own files are: the example data set, the test pictures, the diagram."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "EXAMPLE_DATASET", "TEST_IMAGES", "DIAGRAM"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DATASET = ROOT / "assets" / "example_dataset"
TEST_IMAGES = ROOT / "assets" / "test_images"
DIAGRAM = ROOT / "assets" / "transfer_diagram.png"
