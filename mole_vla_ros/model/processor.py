"""Image pre-processing for MoLe-VLA: camera dict -> validated, resized uint8 batch [1, V, S, S, 3].

"Resize-naive" as Prismatic does for dinosiglip-224px: the whole frame is resized to S x S (no crop, aspect ratio
not kept), with area interpolation when shrinking. Per-backbone pixel normalization happens inside the model's
vision encoder, so this step is shared by every preset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np


class ImageProcessor:
    """Orders and resizes the configured cameras' images. `__call__(images: {camera: HxWx3 uint8})`."""

    def __init__(self, camera_names: Sequence[str], image_size: int):
        if not camera_names:
            raise ValueError("ImageProcessor needs at least one camera name.")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.camera_names = tuple(camera_names)
        self.image_size = int(image_size)

    def resize(self, image: np.ndarray, camera: str = "image") -> np.ndarray:
        """One validated HxWx3 uint8 image -> S x S x 3 uint8."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"camera {camera!r}: expected an HxWx3 RGB image, got shape {img.shape}; convert mono/RGBA to RGB."
            )
        if img.dtype != np.uint8:
            raise ValueError(
                f"camera {camera!r}: expected dtype uint8 (0-255), got {img.dtype}; convert with "
                "(img * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]."
            )
        if img.shape[0] < 2 or img.shape[1] < 2:
            raise ValueError(f"camera {camera!r}: image {img.shape[1]}x{img.shape[0]} is too small.")
        s = self.image_size
        if img.shape[0] == s and img.shape[1] == s:
            return np.ascontiguousarray(img)
        shrink = img.shape[0] > s or img.shape[1] > s
        return cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def __call__(self, images: Mapping[str, np.ndarray]) -> np.ndarray:
        """{camera: image} -> uint8 [1, V, S, S, 3] in camera_names order; extra cameras are ignored."""
        missing = [c for c in self.camera_names if c not in images]
        if missing:
            raise KeyError(
                f"missing image(s) for camera(s) {missing}; the policy needs {list(self.camera_names)}, "
                f"got {sorted(images)}. Check the camera names in the checkpoint config and the topic remaps."
            )
        return np.stack([self.resize(images[c], c) for c in self.camera_names])[None]
