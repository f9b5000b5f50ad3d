"""The foundation every layer may use: the error tree, settings, numeric bounds, private files under
JOBSYS_HOME, sealing of secret fields, time parsing and the bundled Redis server process.

Imports nothing else from jobsys.
"""
