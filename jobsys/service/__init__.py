"""The service layer: ``Client``, the one front door (and its parts, ``*_client.py``), the shared
parts of a server process, and the views every interface shows.

Imports the engine and everything below it; never an interface.
"""
