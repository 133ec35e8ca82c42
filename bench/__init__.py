"""Benchmarks for syncd: a deterministic message corpus and the parse/sync/BCC benchmarks."""
