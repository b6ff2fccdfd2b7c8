"""Framework models to ONNX (spa export NAME): the registry of exporters is spa.exporters.registry."""
from spa.exporters.registry import Exporter, exporter_names, get_exporter  # noqa: F401
