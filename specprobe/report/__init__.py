"""Rendering: terminal tables and progress, the HTML report, figures."""
