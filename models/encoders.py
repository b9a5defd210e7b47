"""Frame and face encoders: weights-free defaults, Hugging Face image models, FER classifiers.

- `HogEncoder`: OpenCV HOG of a grey image resized to a square (no weights at all).
- `HFImageEncoder`: any Hugging Face image model (CLIP, ViT, DINOv2, ...) from a name or a
  local path; CLIP gives its projected image embedding, others their pooled output or CLS.
- `FERClassifier`: a face-expression classifier in TFLite or ONNX given by path (for example
  ../shared/data/models/fer_emotion.tflite: 64x64 grey in [-1, 1], 7 softmax outputs in the
  order angry, disgust, fear, happy, sad, surprise, neutral).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.hf import quiet_transformers

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class HogEncoder:
    """HOG descriptor of a grey image resized to `size` x `size` (8-px cells, 16-px blocks)."""

    def __init__(self, size: int = 64, block_stride: int = 8):
        self.size = size
        self._hog = cv2.HOGDescriptor((size, size), (16, 16), (block_stride, block_stride), (8, 8), 9)

    @property
    def dim(self) -> int:
        return int(self._hog.getDescriptorSize())

    def __call__(self, grays: list[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 for N grey images of any size."""
        out = [self._hog.compute(cv2.resize(g, (self.size, self.size), interpolation=cv2.INTER_AREA))
               for g in grays]
        return np.asarray(out, dtype=np.float32).reshape(len(grays), -1)


class HFImageEncoder:
    """Embeddings from a Hugging Face image model, in batches, on CPU or the given device."""

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        quiet_transformers()
        self.device, self.batch_size = device, batch_size
        self.processor = AutoImageProcessor.from_pretrained(name_or_path)
        self.model = AutoModel.from_pretrained(name_or_path).to(device).eval()
        self._torch = torch

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 for N RGB (H, W, 3) uint8 images."""
        outs = []
        with self._torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                batch = self.processor(images=images[i:i + self.batch_size], return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                outs.append(self._embed(batch).float().cpu().numpy())
        return np.concatenate(outs).astype(np.float32)

    def _embed(self, batch):
        if hasattr(self.model, "get_image_features"):           # CLIP, SigLIP
            feats = self.model.get_image_features(**batch)
            return feats if isinstance(feats, self._torch.Tensor) else feats.pooler_output
        out = self.model(**batch)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]   # (B, D): CLS


class FERClassifier:
    """7-way face-expression probabilities from a TFLite or ONNX model file."""

    def __init__(self, path: str | Path, size: int = 64):
        self.path, self.size = Path(path), size
        if not self.path.is_file():
            raise FileNotFoundError(f"face-expression model {self.path} not found")
        suffix = self.path.suffix.lower()
        if suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._interp = Interpreter(model_path=str(self.path), num_threads=1)
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._out = self._interp.get_output_details()[0]
            self._run = self._run_tflite
        elif suffix == ".onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self._in_name = self._sess.get_inputs()[0].name
            self._run = self._run_onnx
        else:
            raise ValueError(f"face-expression model {self.path} must be .tflite or .onnx")

    def _prepare(self, gray: np.ndarray) -> np.ndarray:
        face = cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return ((face.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None]   # (1, H, W, 1)

    def _run_tflite(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])[0]

    def _run_onnx(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._in_name: x})[0][0]

    def __call__(self, grays: list[np.ndarray]) -> np.ndarray:
        """(N, 7) probabilities for N grey face crops."""
        return np.asarray([self._run(self._prepare(g)) for g in grays], dtype=np.float32)
