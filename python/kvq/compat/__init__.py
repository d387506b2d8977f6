"""Drop-in replacements for other libraries' operators (kvq.compat.mojo: the seed's)."""
from . import mojo  # noqa: F401
