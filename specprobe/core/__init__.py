"""The computation: the eNTK's loss–network–position decomposition, its operator, the ghost norms, the dense reference. No I/O."""
