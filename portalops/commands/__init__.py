"""One module per CLI command: ``build_parser`` adds its sub-parser, ``run`` does the job.

A command module parses nothing by hand and prints nothing: it reads typed inputs from the
context and returns an Outcome; ops.py renders it and sets the exit code.
"""
