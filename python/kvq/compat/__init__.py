"""Drop-in replacements for other libraries' operators (kvq.compat.mojo: mojo_opset's)."""
from . import mojo  # noqa: F401
