"""Near-duplicate and duplicate removal steps (MinHash LSH)."""
