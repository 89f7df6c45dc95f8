"""The hot wallet: the transaction sender (nonces, broadcast, following, fee replacement, reorgs), the payer
of hot withdrawals and the rebalancer."""
