"""The result store: run folders, the locked results file, frames for pandas and CSV."""
