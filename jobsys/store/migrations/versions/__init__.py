"""The revisions, one file each, ``v<revision>_<what it does>.py``; Alembic reads them all."""
