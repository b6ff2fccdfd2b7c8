"""A tiny image classifier and its pruned copy for the fine-tuning tests (onnx.helper, seconds to build)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def classifier(path: Path, batch="N", side: int = 16, classes: int = 5, seed: int = 0, fixed_reshape: bool = False
               ) -> Path:
    """x [batch, 3, side, side] → conv 12 → relu → conv 12 → relu → global average → Gemm → logits [batch, classes].
    fixed_reshape: flatten with a Reshape to [1, -1], as exports with a fixed batch of 1 do (runs only one sample)."""
    rng = np.random.default_rng(seed)

    def weight(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [weight("w1", (12, 3, 3, 3), 0.4), weight("b1", (12,), 0.1), weight("w2", (12, 12, 3, 3), 0.2),
             weight("b2", (12,), 0.1), weight("fc_w", (classes, 12), 0.5), weight("fc_b", (classes,), 0.1),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
             helper.make_node("Reshape", ["g", "flat_shape"], ["f"], name="flatten") if fixed_reshape else
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [batch, 3, side, side])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def pruned_pair(folder: Path, batch="N", fixed_reshape: bool = False) -> tuple[Path, Path]:
    """(dense, pruned at half the channels by magnitude) files in `folder`."""
    from spa.allocation.allocate import Budget
    from spa.flow.pipeline import prune
    from spa.graph import io

    dense = classifier(folder / "dense.onnx", batch=batch, fixed_reshape=fixed_reshape)
    pruned = folder / "pruned.onnx"
    io.save(prune(dense, Budget(ratio=0.5), criterion="l2").model, pruned)
    return dense, pruned


def photo_folder(folder: Path, count: int = 5, seed: int = 0) -> Path:
    """`count` small PNG 'photos' (smooth random colour fields) in `folder`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((40, 30), Image.BILINEAR).save(folder / f"photo{i}.png")
    return folder
