"""The benchmark suite of flask-profile-billing: ``python -m bench.run`` (``make bench``)."""
