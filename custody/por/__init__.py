"""Proof of reserves: the liabilities Merkle sum tree, the statement, proof of control, the verifier."""
