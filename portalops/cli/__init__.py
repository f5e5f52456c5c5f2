"""The command line: parses arguments, calls one domain function, renders its Outcome.

One module per command group (``build_parser`` adds its sub-parser, ``run`` does the job). A
command module parses nothing by hand and prints nothing: it reads typed inputs from the context
and returns an Outcome; main.py renders it and sets the exit code.

Start-up is paid by every command line, so a command module stays cheap to import: its parser
needs only constants, and each handler imports the engine it calls (the domain package, rich,
shtab) in its body. main.py lists every group with its commands' help lines (``COMMANDS``) and
builds only the chosen group; tests/unit/test_cli_startup.py holds the list to the modules.
"""
