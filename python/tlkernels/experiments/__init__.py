"""Experiments reproducing the referenced papers and lectures (docs/design.md, References) on offline
data (CLI subcommands)."""
