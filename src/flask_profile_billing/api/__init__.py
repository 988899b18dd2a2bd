"""The JSON API: thin views over the services, in one envelope and one error shape."""
