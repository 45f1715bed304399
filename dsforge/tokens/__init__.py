"""Token outputs for pretraining: the tokenize step, Megatron and packed-Parquet sinks, verification."""
