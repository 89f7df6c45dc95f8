"""The air-gapped signer: keys, ceremonies, batch files. Imports nothing that opens a socket."""
