"""Text cleaning steps: PII masking, URL filtering and other per-document text rules."""
