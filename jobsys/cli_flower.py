"""`jobsys flower` (being built)."""
