"""`jobsys mcp` (being built)."""
