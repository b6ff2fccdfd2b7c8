"""Example inputs: the one place that decides what a model is fed when SPA runs it without data
(validation, the oracle, statistics, `bench`, `diff`, `report`).

A person choosing inputs for a model they have not seen looks at each input's role: an image
(float, rank 4, 1–4 channels on axis 1 or 3) needs a height and width its strides divide; token
ids need values inside the embedding table; a mask is ones; token types are zeros; positions count
up. A dim the model leaves open gets a size from the producer's metadata (Ultralytics' `imgsz`) or
a short list of candidates, and the **original** model is run on each candidate until one works —
so a model that cannot run on any made-up input is refused before pruning, never blamed after it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_ir as ir

from spa.core.errors import UnsupportedError, UsageError
from spa.graph.kv_inputs import PAST_NAME

#: Sizes tried for an image's open height/width: ImageNet's, then multiples of 32 and 64 that FPN,
#: U-Net and detector strides divide.
IMAGE_SIDES = (224, 256, 320, 640, 512, 96, 48, 32)
#: Sizes tried for another open dim (a sequence, a frame count), after the caller's preferred one.
OTHER_SIZES = (7, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class InputSpec:
    """One graph input: its declared dims (ints; anything else is open) and its role."""
    name: str
    dtype: np.dtype
    dims: list
    role: str                       # image-nchw, image-nhwc, ids, mask, token-types, positions, kv-cache, float, other
    vocab: int | None = None        # ids: rows of the embedding table that reads them
    open_axes: list[int] = field(default_factory=list)


def dim_value(d) -> int | None:
    """A declared dim as a positive int, or None when the model leaves it open (symbolic names,
    expressions like `floor(x/2)`, 0 or -1 as Paddle writes them)."""
    if isinstance(d, (int, np.integer)) and int(d) > 0:
        return int(d)
    return None


def input_specs(model: ir.Model) -> list[InputSpec]:
    return [spec_of(v) for v in model.graph.inputs if v.name not in model.graph.initializers]


def _role(value: ir.Value, dims: list, dtype: np.dtype) -> str:
    name = value.name.lower()
    if np.issubdtype(dtype, np.floating):
        if PAST_NAME.match(value.name):
            return "kv-cache"
        if _STATE_NAME.search(name) and len(dims) >= 2:
            return "state"
        if len(dims) == 4 and dim_value(dims[1]) in (1, 2, 3, 4):
            return "image-nchw"
        if len(dims) == 4 and dim_value(dims[3]) in (1, 3, 4):
            return "image-nhwc"
        return "float"
    if np.issubdtype(dtype, np.integer):
        if len(dims) <= 1 and _RATE_NAME.search(name):
            return "sample-rate"
        if "mask" in name:
            return "mask"
        if "type" in name:
            return "token-types"
        if "position" in name:
            return "positions"
        return "ids" if embedding_rows(value) is not None else "other"
    return "other"


# A recurrent model's carried state (LSTM h/c, a VAD's state): its open dims are the batch.
_STATE_NAME = re.compile(r"state|hidden|^h0?$|^c0?$|^h_|^c_|memory")
# An audio model's sample rate, read as a scalar.
_RATE_NAME = re.compile(r"^sr$|sample_?rate|sampling_?rate")
SAMPLE_RATE = 16000


def embedding_rows(value: ir.Value) -> int | None:
    """The row count of a constant table gathered with this value's ids (the vocabulary)."""
    for user, index in value.uses():
        if user.op_type == "Gather" and index == 1 and user.inputs[0] is not None \
                and user.inputs[0].const_value is not None:
            return int(user.inputs[0].const_value.shape[0])
    return None


def metadata_image_size(model: ir.Model) -> tuple[int, int] | None:
    """An image size the producer wrote into the metadata (Ultralytics: imgsz = [h, w])."""
    for key in ("imgsz", "image_size", "input_size"):
        text = model.metadata_props.get(key)
        if not text:
            continue
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = [int(x) for x in re.findall(r"\d+", text)]
        sizes = [int(x) for x in (parsed if isinstance(parsed, (list, tuple)) else [parsed])]
        if len(sizes) == 1:
            sizes = sizes * 2
        if len(sizes) == 2 and all(0 < s <= 8192 for s in sizes):
            return sizes[0], sizes[1]
    return None


@dataclass
class Choice:
    """The sizes picked for a model's open dims: an image side (height, width) and another size
    (a sequence), with the inputs' shapes they give."""
    side: tuple[int, int]
    other: int
    shapes: dict[str, list[int]]


def candidates(specs: list[InputSpec], given: dict | None = None, *, batch: int = 1, sequence: int = 7,
               image_size: tuple[int, int] | None = None) -> list[Choice]:
    """Choices to try, best first. Open dims that share a name share a size; the first open dim of
    each input (the batch) is `batch`; image sides come from `image_size`, then IMAGE_SIDES; other
    open dims from `sequence`, then OTHER_SIZES."""
    given = dict(given or {})
    unknown = set(given) - {s.name for s in specs}
    if unknown:
        raise UsageError(f"--input-shape names '{sorted(unknown)[0]}', but the model's inputs are "
                         f"{sorted(s.name for s in specs)}")
    for s in specs:
        if s.name in given and s.dims and len(given[s.name]) != len(s.dims):
            raise UsageError(f"input '{s.name}' has rank {len(s.dims)}, the given shape has rank {len(given[s.name])}")
    sides = [tuple(image_size)] if image_size else []
    sides += [(n, n) for n in IMAGE_SIDES if (n, n) not in sides]
    others = [sequence] + [n for n in OTHER_SIZES if n != sequence]
    open_inputs = [s for s in specs if s.name not in given and set(s.open_axes) - {0}]
    needs_sides = any(s.role.startswith("image") for s in open_inputs)
    needs_others = any(not s.role.startswith("image") and s.role != "state" for s in open_inputs)
    found: list[Choice] = []
    for i in range(max(len(sides) if needs_sides else 1, len(others) if needs_others else 1)):
        side, other = sides[min(i, len(sides) - 1)], others[min(i, len(others) - 1)]
        shapes = _shapes_for(specs, given, batch, side, other)
        if all(c.shapes != shapes for c in found):
            found.append(Choice(side, other, shapes))
    return found


def _shapes_for(specs, given, batch, side, other) -> dict[str, list[int]]:
    named: dict[str, int] = {}
    shapes = {}
    for s in specs:
        if s.name in given:
            shapes[s.name] = list(given[s.name])
            for d, n in zip(s.dims, given[s.name]):
                if isinstance(d, str) and d:
                    named.setdefault(d, n)
            continue
        image_axes = {"image-nchw": (2, 3), "image-nhwc": (1, 2)}.get(s.role, ())
        shape = []
        for axis, d in enumerate(s.dims):
            value = dim_value(d)
            if value is None and isinstance(d, str) and d in named:
                value = named[d]
            if value is None:
                if axis == 0 or s.role == "state":
                    value = batch
                elif s.role == "kv-cache":
                    value = 0  # an empty cache: the decoder as if exported without one
                elif axis in image_axes:
                    value = side[image_axes.index(axis)]
                else:
                    value = other
                if isinstance(d, str) and d:
                    named[d] = value
            shape.append(value)
        shapes[s.name] = shape
    return shapes


def fill(specs: list[InputSpec], shapes: dict[str, list[int]], seed: int | np.random.Generator = 0
         ) -> dict[str, np.ndarray]:
    """Random values that suit each input's role (see fill_one)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return {s.name: fill_one(s, shapes[s.name], rng) for s in specs}


def fill_one(spec: InputSpec, dims: list[int], rng: np.random.Generator) -> np.ndarray:
    """Images: 1/f noise (natural_image); other floats: standard normal; ids: uniform inside the
    vocabulary; masks: ones; token types: zeros; positions: counting up; other integers: 0/1."""
    if spec.role.startswith("image") and len(dims) == 4 \
            and min(dims[1:3] if spec.role == "image-nhwc" else dims[2:]) >= 8:
        return natural_image(dims, rng, channels_last=spec.role == "image-nhwc").astype(spec.dtype)
    if np.issubdtype(spec.dtype, np.floating):
        return rng.standard_normal(dims).astype(spec.dtype)
    if spec.role == "sample-rate":
        return np.full(dims, SAMPLE_RATE, spec.dtype)
    if spec.role == "mask" or spec.dtype == np.bool_:
        return np.ones(dims, spec.dtype)
    if spec.role == "token-types":
        return np.zeros(dims, spec.dtype)
    if spec.role == "positions":
        return np.broadcast_to(np.arange(dims[-1] if dims else 1), dims).astype(spec.dtype)
    if spec.role == "ids" and spec.vocab:
        return rng.integers(0, spec.vocab, dims).astype(spec.dtype)
    return rng.integers(0, 2, dims).astype(spec.dtype)


def spec_of(value: ir.Value) -> InputSpec:
    dims = list(value.shape) if value.shape is not None else []
    dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
    spec = InputSpec(value.name, dtype, dims, _role(value, dims, dtype))
    spec.open_axes = [i for i, d in enumerate(dims) if dim_value(d) is None]
    if spec.role == "ids":
        spec.vocab = embedding_rows(value)
    return spec


def natural_image(dims: list[int], rng: np.random.Generator, channels_last: bool = False) -> np.ndarray:
    """Noise with a photo's 1/f amplitude spectrum, each channel at zero mean and unit variance (a
    normalised image): neighbouring pixels correlate as in photos. White noise drives many real
    detectors into saturation, where every output is ~0 and relative comparisons mean nothing."""
    if channels_last:
        return np.moveaxis(natural_image([dims[0], dims[3], dims[1], dims[2]], rng), 1, 3)
    height, width = dims[2:]
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    shape = list(dims[:2]) + [height, fx.shape[1]]
    spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * amplitude
    x = np.fft.irfft2(spectrum, s=(height, width))
    x -= x.mean(axis=(2, 3), keepdims=True)
    return x / x.std(axis=(2, 3), keepdims=True)


#: model.meta key: the Choice the original model ran on (set when the model is loaded for pruning)
CHOICE = "spa.example_choice"


def shapes(model: ir.Model, given: dict | None = None, *, batch: int = 1, sequence: int | None = None) -> dict:
    """Input shapes for `model` without running it: the sizes the original ran on when they are
    known (a `sequence` replaces the other size only where the default one worked), else the first
    candidate."""
    specs = input_specs(model)
    choice = model.meta.get(CHOICE)
    if choice is not None:
        other = sequence if sequence is not None and choice.other == OTHER_SIZES[0] else choice.other
        return _shapes_for(specs, given or {}, batch, choice.side, other)
    return candidates(specs, given, batch=batch, sequence=sequence or OTHER_SIZES[0],
                      image_size=metadata_image_size(model))[0].shapes


def random_feeds(model: ir.Model, seed: int = 0, given: dict | None = None, *, batch: int = 1,
                 sequence: int | None = None) -> dict[str, np.ndarray]:
    """Role-aware random values in the shapes of `shapes`."""
    return fill(input_specs(model), shapes(model, given, batch=batch, sequence=sequence), seed)


def choose(model: ir.Model, runs: Callable[[dict], object], given: dict | None = None, *, seed: int = 0,
           batch: int = 1) -> tuple[Choice, dict[str, np.ndarray], object]:
    """Try the candidates in order on the original model (`runs` runs it on feeds and raises on
    failure); returns the first choice it runs on, its feeds and what `runs` returned. If none
    works, the model is refused with ONNX Runtime's reason for the first candidate."""
    specs = input_specs(model)
    tried = candidates(specs, given, batch=batch, image_size=metadata_image_size(model))
    first_error = None
    for choice in tried[:8]:
        feeds = fill(specs, choice.shapes, seed)
        try:
            return choice, feeds, runs(feeds)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises many types
            first_error = first_error or (choice, exc)
    choice, exc = first_error
    shown = ", ".join(f"{k}={list(v)}" for k, v in choice.shapes.items())
    message = " ".join(str(exc).split())[:300]
    hint = "check the --input-shape values" if given else "give --input-shape NAME=D1,D2,..."
    raise UnsupportedError(f"the original model does not run on made-up inputs ({shown}): {message}; {hint}")


def empty_cache(sess, feeds: dict) -> dict:
    """Empty past keys/values for a decoder's KV-cache inputs the feeds leave out (the dense model
    read without its cache, the pruned one written with it: both then compute the same)."""
    batch = next((len(a) for a in feeds.values() if getattr(a, "ndim", 0)), 1)
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    return {i.name: np.zeros([batch if axis == 0 else d if isinstance(d, int) and axis != 2 else 0
                              for axis, d in enumerate(i.shape)], dtypes.get(i.type, np.float32))
            for i in sess.get_inputs() if i.name not in feeds and PAST_NAME.match(i.name)}
