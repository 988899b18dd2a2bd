"""Tables and the few atomic statements the services run."""
