"""The online custody daemon: API, queue, storage, chain adapters, batch files, proof of reserves."""
