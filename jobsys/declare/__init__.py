"""Declaring work: jobs (``JobSpec``, ``Registry``), cadences, workflows and their checks, the
definitions registered at runtime, and permissions.

Pure model: imports only ``jobsys.base``; no SQL, no Celery.
"""
