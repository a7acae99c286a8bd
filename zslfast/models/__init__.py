"""One module per method; importing this package registers them all (see zslfast.methods)."""
from zslfast.models import cvc, eszsl, grw, gsmflow  # noqa: F401
