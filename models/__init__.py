"""ONNX model bundles: manifest, registry, text and image classifiers."""

# Before any module here imports onnxruntime: the kernel turns its telemetry off (medroute.config).
import medroute  # noqa: F401
