from kglfr.cli import entry

entry()
