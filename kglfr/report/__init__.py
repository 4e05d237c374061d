"""The report page: one self-contained HTML file per training or evaluation (``report.html``).

:mod:`kglfr.report.data` computes what the page shows from arrays and result dicts (pure functions);
:mod:`kglfr.report.assets` draws its pictures and thumbnail sheets; :mod:`kglfr.report.page` renders the
Jinja2 templates in ``templates/`` and writes the page and its ``report_files/`` folder atomically.
The package sits beside ``kglfr.inference`` (it uses data, keypoints, eval, viz and inference); ``train``
and the CLI call it.
"""

from kglfr.report.page import PageInputs, write_compare_page, write_page

__all__ = ["PageInputs", "write_compare_page", "write_page"]
