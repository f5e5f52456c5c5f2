"""The command line: parses arguments, calls one domain function, renders its Outcome.

One module per command group (``build_parser`` adds its sub-parser, ``run`` does the job). A
command module parses nothing by hand and prints nothing: it reads typed inputs from the context
and returns an Outcome; main.py renders it and sets the exit code.
"""
