"""Data sets: registry, sources, download and verification, raw formats, prepared shards."""
