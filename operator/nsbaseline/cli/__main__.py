"""``python -m nsbaseline.cli``: the same command as the ``nsbaseline`` entry point."""

from nsbaseline.cli import main

main()
