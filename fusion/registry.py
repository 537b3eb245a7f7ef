"""The fusion registry: `@register("name")` on an `ECGConditionedLM` class (see `meit.fusion`)."""

from meit.util.registry import Registry

FUSIONS: Registry = Registry("fusion")
register = FUSIONS.register
