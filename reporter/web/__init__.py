"""``reporter serve``: a read-only web view and JSON API of the captures, and their metrics.

* :mod:`flowherd.reporter.web.docs`: the documents, computed by the functions the CLIs use;
* :mod:`flowherd.reporter.web.api`: ``/api/...``, the same JSON as ``--format json``;
* :mod:`flowherd.reporter.web.pages`: the HTML pages and the fragments their live refresh reloads;
* :mod:`flowherd.reporter.web.figures`: the size and timeline figures as SVG;
* :mod:`flowherd.reporter.web.metrics`: ``/metrics``, capture-level Prometheus gauges;
* :mod:`flowherd.reporter.web.access`: the bearer token;
* :mod:`flowherd.reporter.web.app`: the Starlette application that joins them.

Only :mod:`flowherd.reporter.web.access` and :mod:`flowherd.reporter.web.docs` import without the
``web`` extra.
"""
