"""The JSON API: thin views over the services, in the seeds' envelope and error shape."""
