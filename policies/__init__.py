"""Pure policy decisions, shared by the online daemon and the offline signer.

Nothing in this package does I/O or reads the clock: every input is an explicit argument.
"""
