"""The store: the only code that writes SQL. Runs, schedules, workflow runs, runtime definitions,
tokens, audit, search, the schema and its migrations, and the engine that reaches the database.

Imports ``jobsys.declare`` and ``jobsys.base``.
"""
