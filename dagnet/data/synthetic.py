"""Seeded synthetic data sets: shapes on textured backgrounds, and gesture sequences from hidden parts."""

from __future__ import annotations

import numpy as np
import torch

from dagnet.data.base import ArrayDataset, DataError

SHAPE_CLASSES = ("background", "disc", "square", "triangle")


def shapes(
    num: int = 512,
    size: int = 32,
    max_shapes: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    task: str = "segment",
    points: bool = False,
) -> ArrayDataset:
    """Images (3, size, size) with discs, squares and triangles on textured noisy backgrounds.

    task "segment": {"image", "mask"}, the mask (size, size) holding 0 for background
    and 1/2/3 for disc/square/triangle (later shapes cover earlier ones).
    task "localise": one shape per image, plus "box" (x0, y0, x1, y1) as fractions of
    the image side and "label" (0/1/2 for disc/square/triangle).
    points: also give "points" (size, size), sparse labels for point supervision: one
    labelled pixel per visible object and one background pixel per image, carrying
    the mask's class, and POINT_IGNORE (255) everywhere else. The images and masks
    are the same as without `points` (the points are drawn from their own generator).
    """
    if task not in ("segment", "localise"):
        raise DataError(f"shapes: task must be 'segment' or 'localise', got {task!r}")
    if size < 8:
        raise DataError(f"shapes: size must be at least 8, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((num, 3, size, size), np.float32)
    masks = np.zeros((num, size, size), np.int64)
    boxes = np.empty((num, 4), np.float32)
    labels = np.empty(num, np.int64)
    regions: list[list[np.ndarray]] = []
    for i in range(num):
        regions.append([])
        images[i] = _texture(rng, xx / size, yy / size)
        count = 1 if task == "localise" else rng.integers(1, max_shapes + 1)
        for _ in range(count):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            r = rng.uniform(size / 8, size / 4)
            cx, cy = rng.uniform(r, size - r, 2)
            inside = _shape_mask(cls, xx - cx, yy - cy, r)
            images[i][:, inside] = rng.uniform(0, 1, (3, 1))
            masks[i][inside] = cls
            regions[i].append(inside)
        boxes[i] = np.array([cx - r, cy - r, cx + r, cy + r]) / size
        labels[i] = cls - 1
    images += rng.normal(0, noise, images.shape).astype(np.float32)
    columns = {"image": torch.from_numpy(images), "mask": torch.from_numpy(masks)}
    if task == "localise":
        columns |= {"box": torch.from_numpy(boxes), "label": torch.from_numpy(labels)}
    if points:
        columns["points"] = torch.from_numpy(_points(masks, regions, seed))
    return ArrayDataset(columns, inputs=("image",))


POINT_IGNORE = 255


def _points(masks: np.ndarray, regions: list[list[np.ndarray]], seed: int) -> np.ndarray:
    """One random pixel of each object's visible part and one background pixel per image; POINT_IGNORE elsewhere."""
    rng = np.random.default_rng([seed, 1])
    sparse = np.full_like(masks, POINT_IGNORE)
    for i, mask in enumerate(masks):
        for pixels in _visible(mask, regions[i]):
            if len(pixels):
                sparse[i].flat[rng.choice(pixels)] = mask.flat[pixels[0]]
    return sparse


def _visible(mask: np.ndarray, inside: list[np.ndarray]) -> list[np.ndarray]:
    """Flat indices of each object's uncovered pixels, then of the background."""
    covered = np.zeros(mask.shape, bool)
    parts = []
    for region in reversed(inside):  # later shapes cover earlier ones
        parts.append(np.flatnonzero(region & ~covered))
        covered |= region
    return parts + [np.flatnonzero(mask == 0)]


def _texture(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A random base colour modulated by a few low-frequency waves, one set per channel."""
    base = rng.uniform(0.2, 0.8, (3, 1, 1))
    fx, fy = rng.uniform(1, 6, (2, 3, 3, 1, 1))  # 3 waves per channel
    phase = rng.uniform(0, 2 * np.pi, (3, 3, 1, 1))
    waves = np.sin(2 * np.pi * (fx * x + fy * y) + phase).sum(axis=1)
    return (base + 0.08 * waves).astype(np.float32)


def _shape_mask(cls: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside a disc (1), square (2) or upward triangle (3) of half-size r centred at dx = dy = 0."""
    if cls == 1:
        return dx**2 + dy**2 <= r**2
    if cls == 2:
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    # Apex at the top (dy = -r), base of half-width r at the bottom (dy = r).
    return (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)


def gestures(
    num: int = 300,
    num_gestures: int = 3,
    parts: int = 3,
    dim: int = 8,
    noise: float = 0.5,
    max_repeats: int = 2,
    seed: int = 0,
) -> ArrayDataset:
    """Feature sequences in which gestures, each a small HMM over hidden parts, alternate with background.

    Every gesture class is a left-to-right chain of `parts` hidden states; a state
    emits Gaussian features around its mean. The gestures draw their parts from one
    shared pool in different orders, so a single frame is ambiguous and only the
    dynamics tell the classes apart (the latent-dynamic CRF setting). A sequence holds
    one gesture class, performed 1..max_repeats times with background frames around.

    Examples: "frames" (T, dim) float, "labels" (T,) long with 0 for background and
    g + 1 for gesture g, "gesture" () long in 0..num_gestures-1, "mask" (T,) all True
    (padding added by `collate` is False).
    """
    if parts < 2 or num_gestures < 2:
        raise DataError("gestures: need at least 2 gestures and 2 parts per gesture")
    rng = np.random.default_rng(seed)
    pool = rng.normal(0, 1.5, (parts + 1, dim))
    orders = _distinct_orders(rng, num_gestures, parts, len(pool))
    frames, labels, classes = [], [], []
    for _ in range(num):
        g = int(rng.integers(num_gestures))
        x, y = _background(rng, dim, noise)
        for _ in range(rng.integers(1, max_repeats + 1)):
            states = _left_to_right_path(rng, parts)
            x.append(pool[orders[g][states]] + rng.normal(0, noise, (len(states), dim)))
            y.append(np.full(len(states), g + 1))
            more_x, more_y = _background(rng, dim, noise)
            x += more_x
            y += more_y
        frames.append(torch.tensor(np.concatenate(x), dtype=torch.float32))
        labels.append(torch.tensor(np.concatenate(y), dtype=torch.long))
        classes.append(g)
    masks = [torch.ones(len(y), dtype=torch.bool) for y in labels]
    columns = {"frames": frames, "labels": labels, "gesture": torch.tensor(classes), "mask": masks}
    return ArrayDataset(columns, inputs=("frames",))


def _distinct_orders(rng: np.random.Generator, count: int, parts: int, pool: int) -> list[np.ndarray]:
    """`count` different sequences of `parts` distinct pool indices, one per gesture class."""
    orders: list[np.ndarray] = []
    while len(orders) < count:
        order = rng.permutation(pool)[:parts]
        if not any(np.array_equal(order, seen) for seen in orders):
            orders.append(order)
    return orders


def _left_to_right_path(rng: np.random.Generator, parts: int, stay: float = 0.7) -> np.ndarray:
    """Hidden part states 0..parts-1 in order, each held for a geometric number of frames."""
    durations = rng.geometric(1 - stay, parts)
    return np.repeat(np.arange(parts), durations)


def _background(rng: np.random.Generator, dim: int, noise: float) -> tuple[list, list]:
    """3 to 8 frames of zero-mean noise labelled background (0)."""
    length = int(rng.integers(3, 9))
    return [rng.normal(0, noise, (length, dim))], [np.zeros(length, np.int64)]


def disc_scene(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (3, size, size) in 0-255 of four flat-coloured discs with pixel noise, and its
    segment map (size, size) with 0 for the background: the test scene of the dense CRF."""
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    segment = torch.zeros(size, size, dtype=torch.long)
    for disc in range(1, 5):
        cy, cx, r = (torch.rand(3, generator=generator) * torch.tensor([size, size, size / 3])).tolist()
        segment[(ys - cy) ** 2 + (xs - cx) ** 2 < (r + size / 8) ** 2] = disc
    colours = torch.rand(5, 3, generator=generator) * 255
    noise = 8 * torch.randn(3, size, size, generator=generator)
    return (colours[segment].permute(2, 0, 1) + noise).clamp(0, 255), segment
