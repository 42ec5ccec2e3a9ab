"""The HTTP layer: thin Flask views that parse, authenticate and call one function."""
