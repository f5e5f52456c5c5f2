"""Restoring a snapshot: files into a directory (never outside it), databases into a server."""
