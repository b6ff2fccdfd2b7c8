"""A small, deterministic batch of real photos and logit-agreement metrics.

The photos are the ones *shipped inside* the scikit-image wheel (read straight
from ``skimage/data/*.png|jpg``; ``skimage.data.<name>()`` is never called, so
pooch can never be asked to download anything).

Public API: :data:`PHOTOS`, :func:`load_photo`, :func:`imagenet_batch`,
:func:`softmax`, :func:`top1_agreement`, :func:`kl_divergence`.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "PHOTOS",
    "imagenet_batch",
    "kl_divergence",
    "load_photo",
    "softmax",
    "top1_agreement",
]

#: Files used, with what they show (gray images are replicated to RGB).
PHOTOS: dict[str, str] = {
    "chelsea.png": "tabby cat",
    "coffee.png": "cup of espresso on a saucer",
    "astronaut.png": "astronaut (Eileen Collins) with US flag",
    "rocket.jpg": "rocket on a launch pad",
    "motorcycle_left.png": "motorcycle in a room",
    "camera.png": "cameraman with a camera on a tripod (gray)",
    "coins.png": "old coins (gray)",
    "hubble_deep_field.jpg": "Hubble deep field (galaxies)",
}


#: More independent photos for evaluation (distinct scenes, not crops of :data:`PHOTOS`' ones):
#: further scikit-image photos, scikit-learn's two sample images and matplotlib's sample photo,
#: all shipped inside those wheels. ``package:file`` names a file outside scikit-image's folder.
MORE_PHOTOS: dict[str, str] = {
    "retina.jpg": "retina fundus photo",
    "moon.png": "lunar surface (gray)",
    "ihc.png": "stained tissue micrograph",
    "brick.png": "brick wall (gray)",
    "grass.png": "grass (gray)",
    "gravel.png": "gravel (gray)",
    "clock_motion.png": "wall clock, motion blurred (gray)",
    "sklearn:china.jpg": "Chinese temple",
    "sklearn:flower.jpg": "flower",
    "matplotlib:grace_hopper.jpg": "Grace Hopper portrait",
}


def _package_file(name: str) -> str:
    package, _, filename = name.partition(":")
    if package == "sklearn":
        import sklearn.datasets

        return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", filename)
    if package == "matplotlib":
        import matplotlib

        return os.path.join(matplotlib.get_data_path(), "sample_data", filename)
    raise FileNotFoundError(f"{name}: unknown package")


def _data_dir() -> str:
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


def load_photo(filename: str) -> np.ndarray:
    """``filename`` from the scikit-image data folder as HxWx3 uint8 RGB."""
    import skimage.io

    path = _package_file(filename) if ":" in filename else os.path.join(_data_dir(), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{filename} is not shipped with this scikit-image ({path})")
    img = np.asarray(skimage.io.imread(path))
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        raise TypeError(f"{filename}: unexpected dtype {img.dtype}")
    return img


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 float32 in 0..255 (anti-aliased)."""
    from skimage.transform import resize

    out = resize(img, (size, size), order=1, mode="reflect", anti_aliasing=True,
                 preserve_range=True)
    return out.astype(np.float32)


def _center_view(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return _resize(img[y:y + s, x:x + s], size)


def _random_view(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s0 = min(h, w)
    side = int(round(s0 * np.sqrt(rng.uniform(0.3, 1.0))))  # 30%..100% of the square's area
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(crop, size)


def imagenet_batch(size: int = 224, crops_per_image: int = 5, seed: int = 0,
                   photos: list[str] | None = None) -> np.ndarray:
    """Real photos as a float32 NCHW batch of RGB values in 0..255.

    For every photo (default: the 8 of :data:`PHOTOS`): one centred square
    view (shorter side resized to ``size``), then ``crops_per_image`` random
    square crops (30-100% of the area) with random horizontal flips, each
    resized to ``size`` x ``size``. Deterministic for a given ``seed``.
    The default gives 8 * (1 + 5) = 48 images, ordered photo by photo.
    No normalisation is applied (callers apply their model's preprocessing).
    """
    rng = np.random.default_rng(seed)
    views = []
    for name in photos if photos is not None else list(PHOTOS):
        img = load_photo(name)
        views.append(_center_view(img, size))
        for _ in range(crops_per_image):
            views.append(_random_view(img, size, rng))
    batch = np.stack(views).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _as_2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a


def top1_agreement(logits_a, logits_b) -> float:
    """Fraction of rows whose argmax agrees (``logits_a`` is the reference)."""
    a, b = _as_2d(logits_a), _as_2d(logits_b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def kl_divergence(logits_a, logits_b) -> float:
    """Mean over rows of KL(softmax(a) || softmax(b)) in nats; ``a`` is the
    reference (dense) model."""
    a, b = _as_2d(logits_a), _as_2d(logits_b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    za = a - a.max(1, keepdims=True)
    zb = b - b.max(1, keepdims=True)
    log_pa = za - np.log(np.exp(za).sum(1, keepdims=True))
    log_pb = zb - np.log(np.exp(zb).sum(1, keepdims=True))
    kl = (np.exp(log_pa) * (log_pa - log_pb)).sum(1)
    return float(np.mean(np.maximum(kl, 0.0)))
