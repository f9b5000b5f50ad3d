"""The engine: the only code that imports Celery and kombu. The Celery app, the transport,
publishing and delivering runs, the reaper and parking of unknown jobs' messages.

Imports the worker side, scheduling, the store, the declarations and the base.
"""
