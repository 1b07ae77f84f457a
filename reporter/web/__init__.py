"""``reporter serve``: a read-only web view and JSON API of the captures, and their metrics.

* :mod:`reporter.web.docs`: the documents, computed by the functions the CLIs use;
* :mod:`reporter.web.api`: ``/api/...``, the same JSON as ``--format json``;
* :mod:`reporter.web.pages`: the HTML pages and the fragments their live refresh reloads;
* :mod:`reporter.web.figures`: the size and timeline figures as SVG;
* :mod:`reporter.web.metrics`: ``/metrics``, capture-level Prometheus gauges;
* :mod:`reporter.web.access`: the bearer token;
* :mod:`reporter.web.app`: the Starlette application that joins them.

Only :mod:`reporter.web.access` and :mod:`reporter.web.docs` import without the ``web`` extra.
"""
