"""Running jobsys on one machine: the processes of ``jobsys up`` and the benchmark.

Imports the service layer and everything below it; never an interface.
"""
