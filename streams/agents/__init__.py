"""The steps of the processing loop: route each input to its tenant's partition, decide each change
of the partitions a worker owns, hold what must wait for the inputs (``streams.loop`` runs them)."""
