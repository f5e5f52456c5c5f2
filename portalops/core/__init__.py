"""The ground floor: errors, YAML loading and validation, atomic writes, formatting.

Imports nothing else of portal-ops.
"""
