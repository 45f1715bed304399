"""Preference data: ready pairs in (to_pairs), scored completions → pairs (make_pairs), in TRL's format."""
