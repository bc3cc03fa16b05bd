"""Built-in backbones, registered through the same hook a third-party plugin would use.

Torchvision backbones load pretrained weights only from disk: the user's torch hub cache (where
torchvision itself keeps downloads) or a weights file named in the config. Nothing is downloaded.
This module is loaded with every plugin manager, so torch and torchvision are imported only when
a torchvision backbone is built.

On CUDA a backbone runs channels-last under bf16 autocast (fp16 where the GPU lacks bf16), which
is how current GPUs run convolutions fastest; on the CPU it runs channels-last in float32.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingError, EmbeddingModel, PixelBackbone, pick_device
from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import Backbone, RegisterBackbone

if TYPE_CHECKING:
    import torch
    import torchvision

TORCHVISION_BACKBONES = ("resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16")
HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_checkpoint_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where ``torch.hub`` keeps a downloaded copy of these weights."""
    import torch

    filename = os.path.basename(urllib.parse.urlparse(str(weights.url)).path)
    hub: str = torch.hub.get_dir()
    return Path(hub) / "checkpoints" / filename


def load_state_dict(architecture: str, weights_setting: str) -> tuple[dict[str, Any] | None, str]:
    """The state dict named by the config, and a description of where it came from."""
    import torch
    import torchvision

    if weights_setting.lower() == "none":
        return None, "random initialisation"
    candidate = Path(weights_setting).expanduser()
    if candidate.suffix in {".pth", ".pt"} or candidate.is_file():
        if not candidate.is_file():
            raise EmbeddingError(f"model.weights: file {candidate} does not exist")
        return torch.load(candidate, map_location="cpu", weights_only=True), str(candidate)
    try:
        weights = torchvision.models.get_model_weights(architecture)[weights_setting]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in torchvision.models.get_model_weights(architecture))])
        raise EmbeddingError(f"model.weights: {weights_setting!r} is not a weights file or one of {names}") from None
    path = hub_checkpoint_path(weights)
    if not path.is_file():
        raise EmbeddingError(
            f"model.weights: {weights} is not in the local torch cache ({path}). lsun-crowd never "
            'downloads: copy the file there, name a local .pth file, or set weights = "none"'
        )
    return torch.load(path, map_location="cpu", weights_only=True), str(path)


class TorchvisionBackbone:
    """A torchvision classifier with its head removed; the pooled features are the embedding."""

    def __init__(self, architecture: str, config: ModelConfig) -> None:
        import torch
        import torchvision
        from torchvision.transforms import v2

        self.device = pick_device(config.device)
        network = torchvision.models.get_model(architecture, weights=None)
        state_dict, self.weights_source = load_state_dict(architecture, config.weights)
        if state_dict is not None:
            network.load_state_dict(state_dict)
        else:
            warnings.warn(f"{architecture}: no pretrained weights; embeddings will be weak", stacklevel=2)
        for attribute in HEAD_ATTRIBUTES:
            if hasattr(network, attribute):
                setattr(network, attribute, torch.nn.Identity())
                break
        self.network = network.eval().to(self.device, memory_format=torch.channels_last)
        # The same steps on a CPU tensor from Pillow (in the loader's workers) and on a uint8
        # tensor that the GPU decoded.
        self.prepare_tensor = v2.Compose(
            [
                v2.Resize(config.image_size, antialias=True),
                v2.CenterCrop(config.image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.prepare = v2.Compose([v2.PILToTensor(), self.prepare_tensor])
        probe = self.embed_prepared(torch.zeros(1, 3, config.image_size, config.image_size))
        self.dim = int(probe.shape[1])
        self.key = f"{architecture}-{config.weights}-{config.image_size}"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def embed_prepared(self, batch: torch.Tensor) -> NDArray[np.float32]:
        """Vectors of a stacked batch of prepared images (pinned, when it comes from the loader)."""
        import torch

        with torch.inference_mode(), self._autocast():
            inputs = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            features = self.network(inputs).flatten(1)
        return np.asarray(features.float().cpu().numpy(), dtype=np.float32)

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_prepared(torch.stack([self.prepare(image.convert("RGB")) for image in images]))


def _torchvision_factory(architecture: str) -> Callable[[ModelConfig], EmbeddingModel]:
    return lambda config: TorchvisionBackbone(architecture, config)


@hookimpl
def register_backbones(register: RegisterBackbone) -> None:
    register(Backbone("pixels", "grayscale thumbnail pixels, for tiny images", PixelBackbone))
    for architecture in TORCHVISION_BACKBONES:
        register(
            Backbone(architecture, f"torchvision {architecture}, pooled features", _torchvision_factory(architecture))
        )
