"""Article 11: a deduplicated, encrypted, write-only-capable backup repository (FORMAT.md)."""
