"""The SFT path: conversations as ``messages`` (TRL's conversational format) and their steps."""
