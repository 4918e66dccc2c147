"""`python -m textclf_cli` (and `torchrun -m textclf_cli`) entry point."""

from textclf_cli.cli import main

if __name__ == "__main__":
    main()
