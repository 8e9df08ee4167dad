"""`python -m mailcase` is the same as the `mailcase` command."""

from mailcase.cli import main

main()
