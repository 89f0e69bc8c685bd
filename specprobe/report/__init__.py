"""Rendering: the report document, its terminal and HTML renderers, figures, progress.

Entry points: :func:`specprobe.report.document.build_document` (the records read once into
sections), :func:`specprobe.report.terminal.render_run` (Rich),
:func:`specprobe.report.html.write_html` (one self-contained page),
:func:`specprobe.report.plots.write_figures`, and the progress displays of
:mod:`specprobe.report.progress`. :mod:`specprobe.report.tables` holds the tables as data,
which both renderers draw.
"""
