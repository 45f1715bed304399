"""`python -m dsforge` is the `dsforge` command."""

from dsforge.cli import main

main()
