"""`jobsys serve` (being built)."""
