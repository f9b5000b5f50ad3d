"""Scheduling: firing due schedules into runs (the Celery beat entry is ``beat/``).

Imports the store, the declarations and the base.
"""
