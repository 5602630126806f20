"""The built-in layer rules, one file per kind of layer; importing this package registers them."""

from . import attention, conv, embedding, fallback, linear, norms, recurrent  # noqa: F401
