"""The command-line program ``sro-decoder`` and its subcommands."""
