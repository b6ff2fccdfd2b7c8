"""Fine-tuning inputs without any data, made from the dense model itself (spa.statistics' sources):

- a language model that can be sampled from: text it writes itself (LLM-QAT's data-free
  distillation), `pool` sequences of `sequence` tokens; held out: other sequences, other seeds;
- a model with an image input and BatchNorm statistics: images optimised to match those statistics
  (ZeroQ / DeepInversion, spa.statistics.synthesis), varied by random crops, mirroring and mixing
  two of them; held out: images synthesised from another seed;
- anything else: the role-aware example inputs of spa.runtime.examples, a new seed per sample.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from spa.runtime import examples
from spa.training.data import DistillData

#: Held-out inputs made without data: their seeds start here (training seeds stay below).
HELD_OUT_SEED = 1_000_003
HELD_OUT_COUNT = 8


def data_free(teacher: ir.Model, *, seed: int = 0, sequence: int = 128, pool: int | None = None,
              input_shapes: dict | None = None) -> DistillData:
    from spa.statistics.hessian import can_generate, next_token_logits

    lm = next_token_logits(teacher)
    if lm is not None and can_generate(teacher, lm[0]):
        return own_text(teacher, seed, sequence, pool or 32)
    from spa.statistics.synthesis import batchnorms, image_input

    if image_input(teacher) is not None and batchnorms(teacher):
        made = bn_images(teacher, seed, pool or 8)
        if made is not None:
            return made
    return example_inputs(teacher, seed, input_shapes)


def own_text(teacher: ir.Model, seed: int, sequence: int, pool: int) -> DistillData:
    from spa.core.progress import progress
    from spa.statistics.hessian import generated_feeds

    def generate(count: int, start: int, what: str) -> list[dict]:
        return list(progress(generated_feeds(teacher, count, start, length=sequence), what, total=count))

    train = generate(pool, seed, "writing training text")
    held = generate(HELD_OUT_COUNT, HELD_OUT_SEED + seed, "writing held-out text")
    return DistillData(f"{pool} sequences of {sequence} tokens the dense model wrote itself (no data)", held,
                       "other text it wrote (held-out seeds)", [f"seed {seed}"], [f"seed {HELD_OUT_SEED + seed}"],
                       lambda rng: train[int(rng.integers(len(train)))])


def bn_images(teacher: ir.Model, seed: int, pool: int) -> DistillData | None:
    from spa.statistics.synthesis import IMAGES, bn_matched_feeds, image_input

    name = image_input(teacher).name
    made: list[np.ndarray] = []
    batch = 0
    while len(made) < pool:  # bn_matched_feeds optimises at most IMAGES distinct images per call
        feeds = bn_matched_feeds(teacher, min(IMAGES, pool - len(made)), seed=seed * 7919 + batch)
        if feeds is None:
            return None
        made.extend(f[name] for f in feeds)
        batch += 1
    held_feeds = bn_matched_feeds(teacher, HELD_OUT_COUNT, seed=HELD_OUT_SEED + seed)
    spec = next(s for s in examples.input_specs(teacher) if s.name == name)
    shapes = examples.shapes(teacher)
    rest = {s.name: s for s in examples.input_specs(teacher) if s.name != name}

    def draw(rng: np.random.Generator) -> dict:
        a, b = made[int(rng.integers(len(made)))], made[int(rng.integers(len(made)))]
        mix = rng.uniform(0.0, 0.5)
        image = augment((1 - mix) * a + mix * b, rng, channels_last=spec.role == "image-nhwc")
        feed = {n: examples.fill_one(s, shapes[n], rng) for n, s in rest.items()}
        feed[name] = image.astype(spec.dtype)
        return feed

    return DistillData(f"{len(made)} images synthesised to match the dense model's BatchNorm statistics (no data), "
                       "varied by random crops, mirroring and mixing", held_feeds,
                       "other synthesised images (a held-out seed)", [f"seeds {seed * 7919}+"],
                       [f"seed {HELD_OUT_SEED + seed}"], draw)


def augment(image: np.ndarray, rng: np.random.Generator, channels_last: bool = False) -> np.ndarray:
    """A random crop of 35-100% of the area resized back, mirrored half of the time ([1, C, H, W])."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 3, 1) if channels_last else image)).float()
    h, w = x.shape[-2:]
    scale = np.sqrt(rng.uniform(0.35, 1.0))
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    x = torch.nn.functional.interpolate(x[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                        align_corners=False)
    if rng.random() < 0.5:
        x = x.flip(-1)
    out = x.numpy()
    return np.ascontiguousarray(np.moveaxis(out, 1, 3) if channels_last else out)


def example_inputs(teacher: ir.Model, seed: int, input_shapes: dict | None) -> DistillData:
    specs = examples.input_specs(teacher)
    shapes = examples.shapes(teacher, input_shapes)
    held = [examples.fill(specs, shapes, HELD_OUT_SEED + seed + i) for i in range(HELD_OUT_COUNT)]
    return DistillData("example inputs made up for every step (no data: 1/f-noise images, ids inside the "
                       "vocabulary, normal floats)", held, "other made-up inputs (held-out seeds)", ["training rng"],
                       [f"seeds {HELD_OUT_SEED + seed}+"],
                       lambda rng: examples.fill(specs, shapes, rng))
