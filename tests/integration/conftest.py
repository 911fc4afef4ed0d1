"""Puts this folder on ``sys.path``, so every integration kit can ``import support``.

The test folders have no ``__init__.py``; in pytest's default (prepend) import mode that
makes pytest insert the folder of each conftest and test module it imports at the front of
``sys.path``. That is how ``from workerkit import ...`` works in the worker tests, and this
file, loaded before the conftest of any folder below, does the same for ``support.py``.
It holds no fixtures.
"""
