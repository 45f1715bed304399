"""Readers, part stores, sinks, dataset cards and Hub upload."""
