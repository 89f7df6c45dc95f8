"""`python -m signer.cli`: the `signer` command, where the console script is not installed."""

from signer.cli import main

main()
