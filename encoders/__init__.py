"""ECG signal encoders and small image encoders (plain nn.Modules), looked up by name.

Every registered encoder maps (B, C, *input_size) to (B, n_tokens, dim) and declares
`output_shape(input_size) -> (n_tokens, dim)`, an attribute `out_dim`, `input_kind` ("signal": input_size = (T,),
or "image": input_size = (H, W)) and `in_channels` (12 leads for signals, 3 for images).
"""

from meit.registry import Registry

ENCODERS: Registry = Registry("encoder")
register = ENCODERS.register


def build_encoder(name: str, **kwargs):
    """Builds the encoder registered as `name`."""
    _import_builtin_encoders()
    return ENCODERS.build(name, **kwargs)


def encoder_names() -> list[str]:
    """Names of all registered encoders."""
    _import_builtin_encoders()
    return ENCODERS.names()


def _import_builtin_encoders() -> None:
    # Imported lazily so that `register` is defined before the modules that use it load.
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


BUILTIN_MODULES: list[str] = [
    "meit.encoders.resnet1d",
    "meit.encoders.image",
]  # each module registers its encoders on import
