"""The worker side of one delivery, free of Celery: executing it, what a running job sees,
deadlines, and the supervisor of a worker's processes.

Imports the store, the declarations and the base.
"""
