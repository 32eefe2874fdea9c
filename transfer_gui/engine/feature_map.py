"""What the model sees: the images' backbone features laid out on a 2-D map, one colour per class.

A pretrained backbone puts pictures of one kind near each other before it has seen a single one of
your labels; a random-weight backbone of the same architecture does not. Side by side the two maps
answer "why does transfer learning work" without a word.

The map is scikit-learn's t-SNE of the L2-normalised pooled features: it keeps each image's nearest
neighbours near it, and it uses no labels, so clusters on it are the features' own. (A 2-D PCA was
tried first: on the example data it kept 29 % of each image's 5 nearest neighbours in its class
for pretrained features against 17 % for random ones; t-SNE kept 58 % against 20 %.) Under each map
the share of neighbours of the same class is measured and written. Sets larger than
``MAP_MAX_IMAGES`` are drawn from a seeded random sample (stated under the map).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .features import FeatureCache, extract_features, feature_key, make_loader
from .figures import _fit, _font
from .transforms import eval_transform

if TYPE_CHECKING:
    from .data import ImageDataset
    from .workflow import TrainedModel

__all__ = ["MAP_MAX_IMAGES", "NEIGHBOURS", "map_sample", "layout", "same_class_neighbours", "FeatureMap",
           "feature_map", "trained_maps", "MapPicture", "map_picture"]

MAP_MAX_IMAGES = 400  # points on one map: enough to see clusters, few enough to tell apart (t-SNE ~2 s)
NEIGHBOURS = 5  # the neighbours counted under the map
_PANEL = 400  # pixels across one map
_PICK_RADIUS = 14  # a click this close to a point picks it

# Ten colours told apart on white (Tableau 10); classes beyond ten repeat them.
_PALETTE = [(78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79), (237, 201, 72),
            (176, 122, 161), (255, 157, 167), (156, 117, 95), (186, 176, 172)]


def map_sample(n_images: int, seed: int) -> list[int]:
    """The images a map shows: all of them, or a seeded random ``MAP_MAX_IMAGES`` (sorted)."""
    if n_images <= MAP_MAX_IMAGES:
        return list(range(n_images))
    return sorted(random.Random(seed).sample(range(n_images), MAP_MAX_IMAGES))


def layout(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(n, 2) map coordinates of the images whose features are given: t-SNE of the L2-normalised
    features (PCA start, seeded, so the same features give the same map)."""
    from sklearn.manifold import TSNE

    x = torch.nn.functional.normalize(features.double(), dim=1).numpy()
    if len(x) < 5:  # too few for neighbourhoods: a line in order is all there is to show
        return np.stack([np.arange(len(x), dtype=float), np.zeros(len(x))], 1)
    return TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", learning_rate="auto",
                random_state=seed).fit_transform(x)


def same_class_neighbours(xy: np.ndarray, true: Sequence[str], k: int = NEIGHBOURS) -> float:
    """The share of each point's ``k`` nearest points on the map that have its class."""
    n = len(xy)
    if n <= k:
        return float("nan")
    y = np.asarray(true)
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argpartition(d, k, axis=1)[:, :k]
    return float((y[nearest] == y[:, None]).mean())


@dataclass
class FeatureMap:
    """One map: where each shown image lands, its class, and what the model said about it.

    Attributes:
        title: what the features are (e.g. "pretrained weights").
        indices: the dataset images shown.
        xy: (len(indices), 2) their map coordinates.
        true: each image's class.
        predicted: the class a model that had not learned from the image gave it, or None where
            there is no such answer (mistakes are marked only where one is known).
        neighbours: the share of each image's nearest points on the map that have its class.
        n_total: images in the set (more than shown when the map is a sample).
    """

    title: str
    indices: list[int]
    xy: np.ndarray
    true: list[str]
    predicted: list[str | None]
    neighbours: float
    n_total: int

    @property
    def mistakes(self) -> int:
        """How many shown images were answered wrong."""
        return sum(p is not None and p != t for t, p in zip(self.true, self.predicted))


def feature_map(title: str, features: torch.Tensor, indices: Sequence[int], true: Sequence[str], n_total: int,
                predicted: dict[int, str] | None = None, seed: int = 0) -> FeatureMap:
    """The map of ``features`` (one row per entry of ``indices``, the dataset images shown).

    Args:
        title: what the features are.
        features: (len(indices), d) pooled backbone features.
        indices: the dataset image of each row.
        true: the class of each row.
        n_total: images in the whole set.
        predicted: dataset index -> the class a model that had not learned from it gave it.
        seed: the layout's seed.
    """
    if len(features) != len(indices) or len(true) != len(indices):
        raise ValueError(f"{len(features)} feature rows, {len(indices)} images and {len(true)} classes differ")
    xy = layout(features, seed)
    predicted = predicted or {}
    return FeatureMap(title, list(indices), xy, list(true), [predicted.get(i) for i in indices],
                      same_class_neighbours(xy, true), n_total)


def trained_maps(trained: TrainedModel, dataset: ImageDataset, cache: FeatureCache | None = None,
                 random_features: tuple[list[int], torch.Tensor] | None = None) -> list[FeatureMap]:
    """The map of a trained model's images, its mistakes marked, and beside it the same images
    through random weights when ``random_features`` (from a comparison) cover the same sample.

    The features are the frozen backbone's, from ``cache`` when the training left them there
    (no image is read again); otherwise the trained model reads the shown images.
    """
    result = trained.result
    sample = map_sample(len(dataset.items), result.config.seed)
    features = None
    if cache is not None:
        features = cache.get(feature_key(result.model_name, result.weights_source, result.config,
                                         result.data_config, dataset))
    if features is not None:
        features = features[torch.tensor(sample)]
        title = ("pretrained weights" if result.config.pretrained and not result.config.init_bundle
                 else "the model's starting weights")
    else:
        loader = make_loader(dataset, sample, eval_transform(result.data_config), 32, False, result.config.seed)
        *_, (_, features) = extract_features(result.model, loader, torch.device("cpu"))
        title = "the trained model"
    checked = result.validation.indices if result.validation is not None else ()
    predicted = {i: r.predicted_label for i, r in zip(checked, trained.evaluation.images)}
    true = [dataset.items[i].label for i in sample]
    maps = [feature_map(title, features, sample, true, len(dataset.items), predicted, result.config.seed)]
    if random_features is not None and list(random_features[0]) == sample:
        maps.append(feature_map("random weights (same architecture)", random_features[1], sample, true,
                                len(dataset.items), None, result.config.seed))
    return maps


@dataclass
class MapPicture:
    """The maps drawn side by side, and where each point is (to turn a click into an image).

    Attributes:
        image: the picture (RGB).
        maps: the maps drawn, left to right.
        points: per map, the pixel centre of each of its points (same order as its ``indices``).
        notes: per map, the lines written under it.
    """

    image: Image.Image
    maps: list[FeatureMap]
    points: list[np.ndarray]
    notes: list[list[str]]

    def point_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(map number, dataset index) of the point nearest to pixel (x, y), or None when no point
        is within a few pixels."""
        best = None
        for k, centres in enumerate(self.points):
            if len(centres) == 0:
                continue
            d = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
            j = int(d.argmin())
            if d[j] <= _PICK_RADIUS and (best is None or d[j] < best[0]):
                best = (float(d[j]), k, self.maps[k].indices[j])
        return None if best is None else (best[1], best[2])


def map_picture(maps: Sequence[FeatureMap], labels: Sequence[str]) -> MapPicture:
    """Draw ``maps`` side by side: a dot per image in its class's colour, a black cross over each
    mistake, each map scaled to fill its square, and one colour legend under them all."""
    font, small = _font(15), _font(12)
    pad, head = 16, 34
    colour = {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = pad + len(maps) * (_PANEL + pad)
    entries = [(label, int(probe.textlength(_fit(probe, label, small, 150), font=small)) + 30) for label in labels]
    rows, x = 1, pad
    for _, w in entries:  # the legend wraps to the picture's width
        if x + w > width - pad:
            rows, x = rows + 1, pad
        x += w
    height = head + _PANEL + 62 + rows * 20 + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    centres, notes = [], []
    for k, fmap in enumerate(maps):
        left, top = pad + k * (_PANEL + pad), head
        draw.rectangle([left, top, left + _PANEL, top + _PANEL], outline=(210, 210, 210), fill=(250, 250, 250))
        draw.text((left + _PANEL / 2, 8), fmap.title, fill="black", font=font, anchor="mt")
        xy = fmap.xy
        if len(xy):
            low, high = xy.min(0), xy.max(0)
            span = np.where(high - low > 0, high - low, 1.0)
            inner = _PANEL - 2 * 14
            # y grows downward on screen: the first component runs left to right, the second up
            px = left + 14 + (xy[:, 0] - low[0]) / span[0] * inner
            py = top + _PANEL - 14 - (xy[:, 1] - low[1]) / span[1] * inner
        else:
            px = py = np.zeros(0)
        centres.append(np.stack([px, py], 1) if len(xy) else np.zeros((0, 2)))
        for x, y, t in zip(px, py, fmap.true):
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour.get(t, (120, 120, 120)), outline="white")
        for x, y, t, p in zip(px, py, fmap.true, fmap.predicted):
            if p is not None and p != t:  # mistakes on top, so none hides under a dot
                draw.line([(x - 6, y - 6), (x + 6, y + 6)], fill="black", width=3)
                draw.line([(x - 6, y + 6), (x + 6, y - 6)], fill="black", width=3)
        shown = (f"{len(fmap.indices)} images" if len(fmap.indices) == fmap.n_total
                 else f"a random {len(fmap.indices)} of {fmap.n_total} images")
        if any(p is not None for p in fmap.predicted):
            shown += f" · X = answered wrong ({fmap.mistakes})"
        lines = [shown, f"of each image's {NEIGHBOURS} nearest on the map, {fmap.neighbours:.0%} are of its class"]
        for row, line in enumerate(lines):
            draw.text((left + _PANEL / 2, top + _PANEL + 8 + 18 * row), line, fill=(90, 90, 90), font=small,
                      anchor="mt")
        notes.append(lines)
    x, y = pad, head + _PANEL + 52
    for (label, w) in entries:
        if x + w > width - pad:
            x, y = pad, y + 20
        draw.ellipse([x, y + 3, x + 10, y + 13], fill=colour[label])
        draw.text((x + 15, y + 8), _fit(draw, label, small, 150), fill="black", font=small, anchor="lm")
        x += w
    return MapPicture(img, list(maps), centres, notes)
