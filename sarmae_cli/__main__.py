"""`python -m sarmae_cli` runs the command-line interface."""

from sarmae_cli.cli import main

if __name__ == "__main__":
    main()
