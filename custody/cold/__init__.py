"""The cold wallet: creating the Safe, and cold batches (export to the signers, import of their signatures,
execution through the hot wallet's sender)."""
