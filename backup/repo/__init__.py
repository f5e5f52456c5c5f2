"""The repository engine: storage (local, S3), age encryption, keys, packs, index, trees,
snapshots, the chunker and blob writer, locks. Knows nothing of sources, jobs or config files;
FORMAT.md is its contract."""
