"""Input formats for ``to_messages``: one module per family, each a batch → ``messages`` converter."""
