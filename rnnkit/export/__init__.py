"""Export of recurrent layers and models to other runtimes: ONNX (:func:`export_onnx`),
run with :class:`OnnxRecurrent`. Needs the ``export`` extra (onnx, onnxruntime)."""
from .onnx import MODES, export_onnx
from .runtime import OnnxRecurrent

__all__ = ["export_onnx", "OnnxRecurrent", "MODES"]
