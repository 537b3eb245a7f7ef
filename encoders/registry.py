"""The encoder registry: `@register("name")` on an encoder class or factory (see `meit.encoders`)."""

from meit.util.registry import Registry

ENCODERS: Registry = Registry("encoder")
register = ENCODERS.register
