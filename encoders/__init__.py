"""ECG signal encoders and small image encoders (plain nn.Modules), looked up by name.

Every registered encoder maps (B, C, *input_size) to (B, n_tokens, dim) and declares
`output_shape(input_size) -> (n_tokens, dim)`, an attribute `out_dim`, `input_kind` ("signal": input_size = (T,),
or "image": input_size = (H, W)) and `in_channels` (12 leads for signals, 3 for images).
"""

# Importing the built-in modules registers their encoders; a new encoder module registers with
# `@register("name")` from `meit.encoders.registry` and is added here.
from meit.encoders import image, resnet1d  # noqa: F401
from meit.encoders.registry import ENCODERS, register

__all__ = ["ENCODERS", "build_encoder", "encoder_names", "register"]


def build_encoder(name: str, **kwargs):
    """Builds the encoder registered as `name`."""
    return ENCODERS.build(name, **kwargs)


def encoder_names() -> list[str]:
    """Names of all registered encoders."""
    return ENCODERS.names()
