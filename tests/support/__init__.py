"""Helpers of the test suite; the fixtures that use them are in tests/conftest.py.

- ``host_app``: the Flask app the tests run the extension in, its hand-moved ``Clock``, the
  ``as_user`` login headers and the ``AppFactory`` type of the ``make_app`` fixture.
- ``servers``: throwaway PostgreSQL and Redis servers for the test session (the fixtures
  ``postgresql_server`` and ``redis_server``), built on ``loopback`` (shared with bench/).
- ``concurrency``, ``workers``: requests fired at once from threads and spawned processes, and an
  app server in a process of its own; spawned processes import these modules by name.
- ``contracts``: comparing real JSON with the documented examples, shape by shape.
- ``payments``, ``profile``, ``subscriptions``: what the modules testing one area share.
"""
