"""The creators' command line: one module per group of subcommands."""
