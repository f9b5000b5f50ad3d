"""The beat process: Celery beat run by ``jobsys beat`` (``beat.main.run``)."""
