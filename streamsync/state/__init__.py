"""State of the evaluate service: one store per input partition (customers, the clock,
the records still in the reorder buffer), its binary codec, the local RocksDB copy and
recovery from the compacted changelog topic."""
