"""Sweeps: a plan of checkpoints, one checkpoint measured into one record, written by one writer, locally or across launched processes."""
