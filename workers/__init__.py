"""Worker entry points (``workers.app``) and the example jobs (``workers.examples``)."""
