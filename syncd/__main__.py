"""Entry point for ``python -m syncd``: hands over to the CLI."""

from syncd.cli.main import main

if __name__ == "__main__":
    main()
