"""The books: a withdrawal's states and the one way it moves between them, the hash-chained audit log, the
active policy, the freeze, velocity-window usage and the wallets' positions (balances, reservations)."""
