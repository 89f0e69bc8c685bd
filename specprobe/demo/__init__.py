"""The offline demo: a synthetic language, a family of tiny models trained on it, and its sweep."""
