"""Load models from any accepted form into onnx-ir, and save them atomically: the one import for
callers (`from spa.graph import io; io.load(…)`, `io.save(…)`). Each job lives in its own module:

- `spa.graph.load`: load a path, ModelProto, onnx_ir.Model or gs.Graph; payload checks; the model
  file of a Hugging Face folder
- `spa.graph.input_files`: bounded, typed reads of user-named files (plans, calibration, side files)
- `spa.graph.external_data`: which files a model's weights come from, resolved inside its folder
- `spa.graph.mapped`: weights mapped per read; lazy slices of big weights (out of core)
- `spa.graph.stream`: the model as one protobuf, serialized, streamed or measured
- `spa.graph.save`: the atomic save of a model and its external data file
"""
from __future__ import annotations

from spa.graph import mapped as _mapped
from spa.graph.external_data import (  # noqa: F401
    SOURCE_FILES, check_external_data, external_tensors, files_read_by, model_files, resolve_inside,
)
from spa.graph.input_files import CALIB_MAX_BYTES, check_calibration, check_input_file, read_bounded  # noqa: F401
from spa.graph.load import check_tensor_payloads, load, model_file  # noqa: F401
from spa.graph.mapped import MappedTensor, map_on_demand  # noqa: F401
from spa.graph.save import (  # noqa: F401
    ALIGN_THRESHOLD, ALIGNMENT, EXPORTER_ANNOTATED, EXTERNAL_DATA_THRESHOLD, EXTERNAL_TENSOR_MIN_BYTES,
    SAVE_IN_FLIGHT_BYTES, _exporter_annotations, check_output_path, save, save_with_external_data,
)
from spa.graph.stream import serialized_bytes, to_graphsurgeon, to_proto, weight_bytes, write_streamed  # noqa: F401

# Sliced tensors at least this big are computed when read (and dropped), not held in memory. The
# slicer calls `io.take`, and tests lower this knob here (monkeypatch.setattr(io, "LAZY_SLICE_MIN_BYTES", 0)).
LAZY_SLICE_MIN_BYTES = _mapped.LAZY_SLICE_MIN_BYTES


def take(tensor, kept, name):
    """spa.graph.mapped.take with this module's LAZY_SLICE_MIN_BYTES."""
    return _mapped.take(tensor, kept, name, lazy_min_bytes=LAZY_SLICE_MIN_BYTES)
