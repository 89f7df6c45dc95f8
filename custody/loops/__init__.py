"""The daemon's background loops: the worker (pays hot withdrawals, sends and follows everything the hot wallet
signs, keeps cold batches, the hot band and balances up to date) and the scheduler (queues delayed withdrawals
and prunes request nonces beside the API). Each composes services from the subsystems; none holds business
rules of its own."""
