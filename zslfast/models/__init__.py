"""One module per method: networks, losses, step functions and a recipe. The registry that names
them is :data:`zslfast.engine.registry.METHODS` (importing this package registers nothing)."""
