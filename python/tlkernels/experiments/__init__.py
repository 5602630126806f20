"""Experiments reproducing the seeds on offline data (CLI subcommands)."""
