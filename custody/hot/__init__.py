"""The hot wallet: the transaction sender (nonces, broadcast, following, fee replacement, reorgs) and its
rollback watch, the payer of hot withdrawals and the rebalancer. Nothing here imports the cold wallet: what a
cold batch's execution settles is handed to the sender by the worker (``custody.loops.worker``)."""
