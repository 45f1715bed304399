"""LLM generation and judging steps: one typed ``llm:`` block, cached calls, counted failures."""
