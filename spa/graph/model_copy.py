"""A structural copy of a model (canonicalization keeps a spare; validation and the oracle work on
copies), in the graph layer so that spa.graph needs nothing from spa.runtime."""
from __future__ import annotations

import onnx_ir as ir


def copy_model(model: ir.Model) -> ir.Model:
    """A structural copy; weight tensors are shared (passes replace tensors, never write into them),
    so memory-mapped external data stays mapped."""
    copy = ir.Model(model.graph.clone(), ir_version=model.ir_version, producer_name=model.producer_name,
                    producer_version=model.producer_version, domain=model.domain,
                    model_version=model.model_version, doc_string=model.doc_string,
                    functions=list(model.functions.values()), metadata_props=dict(model.metadata_props))
    copy.meta.update(model.meta)
    return copy
