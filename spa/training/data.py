"""What a fine-tuning run feeds the models: training inputs and held-out inputs, never the same.

Every source gives feeds of one sample each (input name → array with a leading batch axis of 1),
so a model exported with a fixed batch of 1 trains as well as one with a dynamic batch:
- `ImageFiles`: a folder of photos, decoded, cropped and normalised for the model's image input;
  the held-out photos are whole files set aside (not crops of training photos);
- `TextFiles`: a text file or folder of them, tokenized with the model's tokenizer; held out are
  whole documents (files, or blank-line-separated paragraphs of one file);
- `ArrayFile`: an .npz whose arrays are named after the model's inputs, samples on axis 0;
- spa.training.data_free: inputs made without data, from the dense model itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from spa.core.errors import InputError, UsageError
from spa.runtime import examples

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEXT_SUFFIXES = (".txt", ".md", ".cor", ".text")
#: Share of sources (files, documents, samples) set aside for held-out evaluation, at least one.
HELD_OUT_SHARE = 0.2
#: Views of each held-out image: the centred one and random crops fixed by seed.
HELD_OUT_VIEWS = 4
#: ImageNet's per-channel mean and standard deviation on 0..1 pixels: the normalisation used when
#: neither the user nor the model's metadata gives one.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DistillData:
    """Training and held-out feeds. `sample(rng, n)` draws n training feeds; `held_out` is fixed."""
    description: str
    held_out: list[dict]
    held_out_description: str
    training_sources: list[str] = field(default_factory=list)   # files, documents, samples drawn from
    held_out_sources: list[str] = field(default_factory=list)   # never drawn from for training
    _draw: object = field(default=None, repr=False)

    def sample(self, rng: np.random.Generator, count: int) -> list[dict]:
        return [self._draw(rng) for _ in range(count)]


def split_held_out(items: list, share: float = HELD_OUT_SHARE) -> tuple[list, list]:
    """(training, held-out): every k-th item held out, at least one of each (needs two items)."""
    if len(items) < 2:
        raise InputError(f"need at least 2 independent sources (files, documents or samples) to keep one for "
                         f"held-out evaluation; got {len(items)}")
    step = max(2, round(1 / share))
    held_at = set(range(step - 1, len(items), step))
    held = [x for i, x in enumerate(items) if i in held_at]
    train = [x for i, x in enumerate(items) if i not in held_at]
    return train, held


def other_inputs(model: ir.Model, shapes: dict, skip: set[str], rng) -> dict:
    """Role-aware values for the inputs a source does not provide (masks: ones, positions: counting)."""
    return {s.name: examples.fill_one(s, shapes[s.name], rng) for s in examples.input_specs(model)
            if s.name not in skip}


# ----------------------------------------------------------------- images
def image_spec(model: ir.Model) -> examples.InputSpec:
    specs = [s for s in examples.input_specs(model) if s.role.startswith("image")]
    if not specs:
        raise UsageError("--data gives images, but the model has no image input (a float input [N, C, H, W] or "
                         "[N, H, W, C] with 1-4 channels)")
    return specs[0]


def parse_triple(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in str(text).replace("[", "").replace("]", "").split(","))
    except ValueError:
        raise UsageError(f"{what} takes comma-separated numbers (R,G,B), not '{text}'") from None
    if len(values) not in (1, 3) or not all(np.isfinite(values)):
        raise UsageError(f"{what} takes 1 or 3 finite numbers, not '{text}'")
    return values


def normalisation(model: ir.Model, mean=None, std=None, preprocessor: dict | None = None) -> tuple[tuple, tuple, str]:
    """(mean, std, where they came from), on 0..1 pixels: given, else the model's metadata
    (`image_mean`/`image_std`), else a Hugging Face preprocessor_config.json, else ImageNet's."""
    if mean is not None or std is not None:
        return mean or (0.0,), std or (1.0,), "given"
    props = model.metadata_props
    if props.get("image_mean") and props.get("image_std"):
        return parse_triple(props["image_mean"], "image_mean"), parse_triple(props["image_std"], "image_std"), \
            "the model's metadata"
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        return tuple(preprocessor["image_mean"]), tuple(preprocessor["image_std"]), "preprocessor_config.json"
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet's (default; --mean/--std to change)"


def decode(path: Path, longest: int) -> np.ndarray:
    """RGB uint8 [H, W, 3], shrunk so its longer side is at most `longest` (keeps memory small)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = longest / max(img.size)
            if scale < 1:
                img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                                 Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({str(exc)[:120]})") from None


def crop(image: np.ndarray, height: int, width: int, rng: np.random.Generator | None) -> np.ndarray:
    """A view resized to height × width, float32 0..1 [H, W, 3]: the centred largest crop of the
    target's aspect (rng None), or a random crop of 35-100% of the area, aspect 3/4-4/3, mirrored
    half of the time (the usual training augmentation)."""
    import torch

    h, w = image.shape[:2]
    if rng is None:
        side = min(h / height, w / width)
        ch, cw = round(height * side), round(width * side)
        top, left = (h - ch) // 2, (w - cw) // 2
    else:
        area = rng.uniform(0.35, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * width / height
        cw = int(min(w, round(np.sqrt(area * aspect))))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    patch = torch.from_numpy(image[top:top + ch, left:left + cw].copy()).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(patch, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=True)[0].permute(1, 2, 0).numpy() / 255.0
    if rng is not None and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def image_files(model: ir.Model, folder: Path, mean=None, std=None, preprocessor: dict | None = None,
                input_shapes: dict | None = None) -> DistillData:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    spec = image_spec(model)
    shapes = examples.shapes(model, input_shapes)
    dims = shapes[spec.name]
    nhwc = spec.role == "image-nhwc"
    height, width = (dims[1], dims[2]) if nhwc else (dims[2], dims[3])
    channels = dims[3] if nhwc else dims[1]
    mean, std, where = normalisation(model, mean, std, preprocessor)
    train_files, held_files = split_held_out(files)
    longest = 2 * max(height, width)
    train_images = [decode(p, longest) for p in train_files]

    def feed(view: np.ndarray, rng) -> dict:
        x = (view - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        x = x.mean(-1, keepdims=True) if channels == 1 else x[..., :channels]
        x = x if nhwc else np.transpose(x, (2, 0, 1))
        out = other_inputs(model, shapes, {spec.name}, rng)
        out[spec.name] = np.ascontiguousarray(x[None]).astype(spec.dtype)
        return out

    fixed = np.random.default_rng(0)
    held = []
    for path in held_files:  # the centred view and fixed random crops: a finer score than one view per file
        image = decode(path, longest)
        held += [feed(crop(image, height, width, None if i == 0 else fixed), fixed) for i in range(HELD_OUT_VIEWS)]
    return DistillData(f"{len(train_files)} images of {folder} (random crops and flips; normalised with {where} "
                       f"mean/std)", held, f"held-out views ({HELD_OUT_VIEWS} of each of {len(held_files)} images set aside)",
                       [str(p) for p in train_files], [str(p) for p in held_files],
                       lambda rng: feed(mixed_view(train_images, height, width, rng), rng))


def mixed_view(images: list[np.ndarray], height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop, blended half of the time with a crop of another image (weight up to 0.5):
    the teacher labels the blend too, so the student learns the teacher's function between the
    few images a user has rather than their labels (Beyer et al. 2022, "function matching")."""
    view = crop(images[int(rng.integers(len(images)))], height, width, rng)
    if rng.random() < 0.5:
        share = rng.uniform(0.0, 0.5)
        view = (1 - share) * view + share * crop(images[int(rng.integers(len(images)))], height, width, rng)
    return view


# ----------------------------------------------------------------- text
def documents(path: Path) -> list[str]:
    """A folder's text files (one document each), or one file's blank-line-separated paragraphs
    (each line, when there are no blank lines)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs = [d for d in text.split("\n\n") if d.strip()]
        if len(docs) < 2:
            docs = text.splitlines()
    return [d for d in docs if d.strip()]


def text_files(model: ir.Model, path: Path, tokenizer, sequence: int) -> DistillData:
    from spa.statistics.hessian import next_token_logits

    found = next_token_logits(model)
    ids_spec = next((s for s in examples.input_specs(model) if s.role == "ids"), None)
    if ids_spec is None:
        raise UsageError("--data gives text, but the model has no token-ids input")
    if tokenizer is None:
        raise UsageError("text data needs the model's tokenizer: give a Hugging Face folder (model.onnx with its "
                         "tokenizer files) or --tokenizer FOLDER")
    docs = documents(path)
    train_at, held_at = split_held_out(list(range(len(docs))))
    train_docs, held_docs = [docs[i] for i in train_at], [docs[i] for i in held_at]

    def tokens(docs: list[str]) -> np.ndarray:
        ids = []
        for doc in docs:
            ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        return np.asarray(ids, dtype=np.int64)

    train, held_ids = tokens(train_docs), tokens(held_docs)
    if len(train) < sequence + 1 or len(held_ids) < sequence:
        raise InputError(f"{path}: too little text for windows of {sequence} tokens (training {len(train)}, held out "
                         f"{len(held_ids)} tokens); give more text or a smaller --sequence")
    shapes = examples.shapes(model, {ids_spec.name: [1, sequence]} if ids_spec.open_axes else None, sequence=sequence)
    length = shapes[ids_spec.name][-1]

    def feed(window: np.ndarray, rng) -> dict:
        out = other_inputs(model, shapes, {ids_spec.name}, rng)
        out[ids_spec.name] = window[None].astype(ids_spec.dtype)
        return out

    fixed = np.random.default_rng(0)
    held = [feed(held_ids[i:i + length], fixed) for i in range(0, len(held_ids) - length + 1, length)][:16]
    what = "language-model" if found else "token"
    return DistillData(f"{len(train)} tokens of {len(train_docs)} documents of {path} ({what} windows of {length})",
                       held, f"held-out text ({len(held_docs)} documents set aside)",
                       [f"document {i}" for i in train_at], [f"document {i}" for i in held_at],
                       lambda rng: feed(train[(s := int(rng.integers(0, len(train) - length))):s + length], rng))


# ----------------------------------------------------------------- arrays
def array_file(model: ir.Model, path: Path) -> DistillData:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz ({str(exc)[:120]})") from None
    specs = {s.name: s for s in examples.input_specs(model)}
    unknown = set(arrays) - set(specs)
    if unknown or not arrays:
        raise InputError(f"{path}: arrays must be named after the model's inputs {sorted(specs)}; got {sorted(arrays)}")
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise InputError(f"{path}: every array needs the same number of samples on axis 0")
    indices = list(range(counts.pop()))
    train, held = split_held_out(indices)
    shapes = examples.shapes(model)

    def feed(i: int, rng) -> dict:
        out = other_inputs(model, shapes, set(arrays), rng)
        out.update({k: np.ascontiguousarray(a[i:i + 1]).astype(specs[k].dtype) for k, a in arrays.items()})
        return out

    fixed = np.random.default_rng(0)
    return DistillData(f"{len(train)} samples of {path}", [feed(i, fixed) for i in held],
                       f"held-out samples of {path.name} (set aside)", [f"sample {i}" for i in train],
                       [f"sample {i}" for i in held],
                       lambda rng: feed(train[int(rng.integers(len(train)))], rng))


def from_path(model: ir.Model, path, *, tokenizer=None, sequence: int = 128, mean=None, std=None,
              preprocessor: dict | None = None, input_shapes: dict | None = None) -> DistillData:
    """The source a --data path names: a .npz, a folder of images, a folder or file of text."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return array_file(model, path)
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        return image_files(model, path, mean, std, preprocessor, input_shapes)
    if path.is_dir() or path.suffix.lower() in TEXT_SUFFIXES or path.suffix == "":
        return text_files(model, path, tokenizer, sequence)
    raise InputError(f"{path}: --data takes a folder of images, a text file or folder, or an .npz of arrays")
