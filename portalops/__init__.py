"""portal-ops: shared pieces of the operations toolkit (errors, YAML loading, config, output)."""

__version__ = "0.1.0"
