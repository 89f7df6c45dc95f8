"""Chain adapters: the only code in the daemon that talks to a node."""
