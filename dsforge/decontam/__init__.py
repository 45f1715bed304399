"""Benchmark decontamination: benchmark loaders, a hashed word n-gram index and the decontaminate step."""
